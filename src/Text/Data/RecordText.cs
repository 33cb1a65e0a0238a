using System.Text.Json;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Text.Data;

/// <summary>
/// A commonsense question as the evaluation needs it: the prompt, the correct answer label and all
/// answer labels the logits are scored over (ARC/OBQA: the choice labels; BoolQ: true/false; PIQA: A/B).
/// </summary>
public sealed record CommonsenseItem(string Prompt, string Answer, IReadOnlyList<string> AnswerLabels, string Task, string Source);

/// <summary>Turns text records (instruction and commonsense layouts) into prompt and target text.</summary>
public static class RecordText
{
    /// <summary>The prompt and target of a text record of the given task.</summary>
    public static TextPair From(SourceRecord r, TaskType task, InstructionTemplate defaultTemplate)
    {
        if (task.Kind == RecordKind.Instruction)
        {
            string prompt = PromptTemplates.Instruction(task.Template ?? defaultTemplate,
                Str(r, "instruction"), OptStr(r, "input"));
            return new TextPair(prompt, PromptTemplates.InstructionTarget(OptStr(r, "output")));
        }
        var item = Commonsense(r, task);
        return new TextPair(item.Prompt, PromptTemplates.AnswerTarget(item.Answer));
    }

    /// <summary>A commonsense record (ARC, BoolQ, OBQA, PIQA layouts) as prompt, answer and answer labels.</summary>
    public static CommonsenseItem Commonsense(SourceRecord r, TaskType task)
    {
        string source = $"{r.File}: {r.Where}";
        switch (task.Kind)
        {
            case RecordKind.Arc:
            case RecordKind.OpenBookQA:
            {
                string question = Str(r, task.Kind == RecordKind.Arc ? "question" : "question_stem");
                var (labels, texts) = Choices(r);
                string answer = Str(r, "answerKey");
                if (!labels.Contains(answer))
                    throw Fail.InFile(r.File, r.Where, $"answerKey {Fail.Show(answer)} is not one of the choice labels {Fail.Show(labels)}",
                        "make answerKey one of choices.label");
                return new CommonsenseItem(PromptTemplates.MultipleChoice(question, labels, texts), answer, labels, task.Name, source);
            }
            case RecordKind.BoolQ:
            {
                if (!r.Value.TryGetProperty("answer", out var a) || a.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
                    throw Fail.InFile(r.File, r.Where, "field 'answer' is missing or not a JSON boolean", "BoolQ records need \"answer\": true or false");
                return new CommonsenseItem(PromptTemplates.BoolQ(Str(r, "question")), a.GetBoolean() ? "true" : "false",
                    ["true", "false"], task.Name, source);
            }
            case RecordKind.Piqa:
            {
                if (!r.Value.TryGetProperty("label", out var l) || l.ValueKind != JsonValueKind.Number || !l.TryGetInt32(out int label) || label is not (0 or 1))
                    throw Fail.InFile(r.File, r.Where, "field 'label' is missing or not 0 or 1", "PIQA records need \"label\": 0 (sol1) or 1 (sol2)");
                return new CommonsenseItem(PromptTemplates.Piqa(Str(r, "goal"), Str(r, "sol1"), Str(r, "sol2")), label == 0 ? "A" : "B",
                    ["A", "B"], task.Name, source);
            }
            default:
                throw Fail.InFile(r.File, r.Where, $"task '{task.Name}' is not a commonsense task",
                    "use arc-e, arc-c, boolq, obqa or piqa");
        }
    }

    /// <summary>Reads every record of a commonsense file (task auto-detected unless the source names it).</summary>
    public static IReadOnlyList<CommonsenseItem> ReadCommonsense(DataSource source)
    {
        var records = RecordReader.Read(source.Path);
        if (records.Count == 0) throw Fail.InFile(source.Path, "line 1", "the file holds no records", "give a file with at least one record");
        var task = source.Task ?? TaskType.Detect(records[0]);
        return records.Select(r => Commonsense(r, task)).ToList();
    }

    static (List<string> Labels, List<string> Texts) Choices(SourceRecord r)
    {
        const string fix = "write \"choices\": {\"text\": [\"...\", ...], \"label\": [\"A\", ...]} with equally long lists";
        if (!r.Value.TryGetProperty("choices", out var c) || c.ValueKind != JsonValueKind.Object
            || !c.TryGetProperty("text", out var t) || t.ValueKind != JsonValueKind.Array
            || !c.TryGetProperty("label", out var l) || l.ValueKind != JsonValueKind.Array)
            throw Fail.InFile(r.File, r.Where, "field 'choices' is missing or not {text: [...], label: [...]}", fix);
        var texts = t.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()! : null).ToList();
        var labels = l.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()! : null).ToList();
        if (texts.Count != labels.Count || texts.Count == 0 || texts.Contains(null) || labels.Contains(null))
            throw Fail.InFile(r.File, r.Where, $"choices has {texts.Count} texts and {labels.Count} labels (all must be strings)", fix);
        return (labels.Select(x => x!).ToList(), texts.Select(x => x!).ToList());
    }

    static string Str(SourceRecord r, string key)
    {
        if (r.Value.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String) return v.GetString()!;
        throw Fail.InFile(r.File, r.Where, $"field '{key}' is missing or not a string",
            $"every record of this file needs \"{key}\": \"...\" (fields found: {Fail.Show(r.Value.EnumerateObject().Select(p => p.Name).ToList())})");
    }

    static string? OptStr(SourceRecord r, string key)
    {
        if (!r.Value.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        throw Fail.InFile(r.File, r.Where, $"field '{key}' is {v.ValueKind}, not a string", $"write \"{key}\" as a JSON string");
    }
}
