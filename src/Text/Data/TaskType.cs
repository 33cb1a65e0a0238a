using System.Text.Json;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Text.Data;

/// <summary>The record layouts a data file can hold; every record of one file has the same layout.</summary>
public enum RecordKind
{
    /// <summary>`{"input_ids": [...], "labels"?: [...]}`.</summary>
    Tokens,
    /// <summary>`{"instruction", "input"?, "output"}` rendered with an <see cref="InstructionTemplate"/>.</summary>
    Instruction,
    /// <summary>ARC-Easy / ARC-Challenge: `question`, `choices{text,label}`, `answerKey`.</summary>
    Arc,
    /// <summary>BoolQ: `question`, `passage`, `answer` (bool).</summary>
    BoolQ,
    /// <summary>OpenBookQA: `question_stem`, `choices{text,label}`, `answerKey`.</summary>
    OpenBookQA,
    /// <summary>PIQA: `goal`, `sol1`, `sol2`, `label` (0 or 1).</summary>
    Piqa,
}

/// <summary>Prompt templates for instruction data.</summary>
public enum InstructionTemplate
{
    /// <summary>The Stanford Alpaca prompt, with and without input.</summary>
    Alpaca,
    /// <summary>`instruction [+ "\n" + input] + "\n"`.</summary>
    Plain,
}

/// <summary>
/// A task as named on the command line (`arc-e:file.jsonl`) or detected from a file's first record:
/// the record layout it reads and the name its examples carry (for multi-task mixing and reports).
/// </summary>
public sealed record TaskType(string Name, RecordKind Kind, InstructionTemplate? Template = null)
{
    /// <summary>Task names accepted before `:` in `--data TASK:PATH`.</summary>
    public static readonly IReadOnlyDictionary<string, TaskType> Known = new Dictionary<string, TaskType>(StringComparer.OrdinalIgnoreCase)
    {
        ["tokens"] = new("tokens", RecordKind.Tokens),
        ["instruction"] = new("instruction", RecordKind.Instruction),
        ["alpaca"] = new("alpaca", RecordKind.Instruction, InstructionTemplate.Alpaca),
        ["plain"] = new("plain", RecordKind.Instruction, InstructionTemplate.Plain),
        ["arc-e"] = new("arc-e", RecordKind.Arc),
        ["arc-c"] = new("arc-c", RecordKind.Arc),
        ["arc"] = new("arc", RecordKind.Arc),
        ["boolq"] = new("boolq", RecordKind.BoolQ),
        ["obqa"] = new("obqa", RecordKind.OpenBookQA),
        ["piqa"] = new("piqa", RecordKind.Piqa),
    };

    /// <summary>The task a record's fields say it belongs to (auto-detection from a file's first record).</summary>
    public static TaskType Detect(SourceRecord record)
    {
        var v = record.Value;
        bool Has(string key) => v.TryGetProperty(key, out _);
        string? name =
            Has("input_ids") ? "tokens" :
            Has("instruction") ? "instruction" :
            Has("question_stem") ? "obqa" :
            Has("goal") && Has("sol1") ? "piqa" :
            Has("question") && Has("choices") ? "arc" :
            Has("question") && (Has("passage") || Has("answer")) ? "boolq" :
            null;
        if (name is null)
        {
            var keys = v.EnumerateObject().Select(p => p.Name).ToList();
            throw Fail.InFile(record.File, record.Where,
                $"cannot tell the task from the fields {Fail.Show(keys)}",
                "use input_ids[/labels], instruction/input/output, or an ARC/BoolQ/OBQA/PIQA layout, or name the task as --data TASK:PATH with TASK one of "
                + string.Join(", ", Known.Keys));
        }
        return Known[name];
    }
}
