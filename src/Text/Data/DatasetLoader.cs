using System.Text.Json;
using MixLoRA.GraphBuilder;
using MixLoRA.Text.Tokenization;

namespace MixLoRA.Text.Data;

/// <summary>
/// Reads the files of a <see cref="DatasetSpec"/> into tokenized <see cref="Example"/>s, in file order
/// (multi-task mixing = concatenation; the batch stream shuffles).
/// Tokenization follows the reference: the whole text prompt + target is encoded at once with the
/// tokenizer's special tokens (m-LoRA `mlora/tasks/qa_tasks.py`: `tokenizer.encode(prompt, bos=True, eos=False)`;
/// MoE-PEFT `moe_peft/trainer.py` `_dataload_fn` → `Tokenizer.encode(add_special_tokens=True)`), then cut to
/// `cutoff_len` (MoE-PEFT `moe_peft/dispatcher.py` `TrainTask.load_data`: `tokens[:cutoff_len]`).
/// Prompt masking follows alpaca-lora's `generate_and_tokenize_prompt`: the prompt alone is encoded the same
/// way and its length of leading labels become −100 unless train_on_inputs. (m-LoRA itself trains on the
/// whole sequence, i.e. as with `TrainOnInputs = true`.)
/// </summary>
public static class DatasetLoader
{
    public static IReadOnlyList<Example> Load(DatasetSpec spec, ITokenizer? tokenizer)
    {
        if (spec.Sources.Count == 0) throw Fail.User("no data files given", "pass --data FILE (or TASK:FILE) at least once");
        if (spec.CutoffLen is int c && (c < 1 || (spec.MaxSequenceLength is int t && c > t)))
            throw Fail.User($"--cutoff-len {c} is out of range", spec.MaxSequenceLength is int max
                ? $"use a value from 1 to the graph's sequence length {max}" : "use a positive value");
        var all = new List<Example>();
        foreach (var source in spec.Sources) all.AddRange(LoadFile(source, spec, tokenizer));
        return all;
    }

    static List<Example> LoadFile(DataSource source, DatasetSpec spec, ITokenizer? tokenizer)
    {
        var records = RecordReader.Read(source.Path);
        if (records.Count == 0)
            throw Fail.InFile(source.Path, "line 1", "the file holds no records", "give a file with at least one record, or drop it");
        var task = source.Task ?? TaskType.Detect(records[0]);
        if (task.Kind != RecordKind.Tokens && tokenizer is null)
            throw Fail.User($"{source.Path} holds text ({task.Name}) but no tokenizer was given", "pass --tokenizer tokenizer.json");
        var examples = new List<Example>(records.Count);
        foreach (var r in records)
        {
            var ex = task.Kind == RecordKind.Tokens
                ? PreTokenized(r, task)
                : Tokenize(RecordText.From(r, task, spec.Template), tokenizer!, spec, task.Name, $"{r.File}: {r.Where}");
            examples.Add(Fit(ex, r, spec));
        }
        return examples;
    }

    /// <summary>Encodes prompt + target into an example (labels masked on the prompt unless train_on_inputs).</summary>
    public static Example Tokenize(TextPair text, ITokenizer tokenizer, DatasetSpec spec, string task, string source)
    {
        var ids = tokenizer.Encode(text.Prompt + text.Target, addSpecialTokens: true).ToList();
        if (spec.AppendEos && tokenizer.EosId is int eos && (ids.Count == 0 || ids[^1] != eos)) ids.Add(eos);
        int promptLength = Math.Min(tokenizer.Encode(text.Prompt, addSpecialTokens: true).Count, ids.Count);
        var labels = ids.ToArray();
        if (!spec.TrainOnInputs) Array.Fill(labels, Example.IgnoreIndex, 0, promptLength);
        return new Example(ids.ToArray(), labels, promptLength, task, source);
    }

    static Example PreTokenized(SourceRecord r, TaskType task)
    {
        int[] ids = IntArray(r, "input_ids", min: 0)
            ?? throw Fail.InFile(r.File, r.Where, "field 'input_ids' is missing", "pre-tokenized records need \"input_ids\": [ids]");
        int[] labels = IntArray(r, "labels", min: Example.IgnoreIndex) ?? (int[])ids.Clone();
        if (labels.Length != ids.Length)
            throw Fail.InFile(r.File, r.Where, $"labels has {labels.Length} entries but input_ids has {ids.Length}",
                "give one label per token (−100 for no loss) or leave labels out");
        if (ids.Length == 0) throw Fail.InFile(r.File, r.Where, "input_ids is empty", "give at least one token");
        int prompt = 0;
        while (prompt < labels.Length && labels[prompt] == Example.IgnoreIndex) prompt++;
        return new Example(ids, labels, prompt, task.Name, $"{r.File}: {r.Where}");
    }

    static int[]? IntArray(SourceRecord r, string key, int min)
    {
        if (!r.Value.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        string fix = $"write \"{key}\" as an array of integers" + (min < 0 ? " (ids, or −100 for no loss)" : " ≥ 0");
        if (v.ValueKind != JsonValueKind.Array) throw Fail.InFile(r.File, r.Where, $"field '{key}' is {v.ValueKind}, not an array", fix);
        var result = new int[v.GetArrayLength()];
        int i = 0;
        foreach (var e in v.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int x) || x < min || (x < 0 && x != Example.IgnoreIndex))
                throw Fail.InFile(r.File, r.Where, $"{key}[{i}] = {e.GetRawText()} is not a valid entry", fix);
            result[i++] = x;
        }
        return result;
    }

    /// <summary>Applies cutoff_len, then checks the example fits the graph's sequence length.</summary>
    static Example Fit(Example ex, SourceRecord r, DatasetSpec spec)
    {
        if (spec.CutoffLen is int cut && ex.Length > cut)
            ex = ex with { InputIds = ex.InputIds[..cut], Labels = ex.Labels[..cut], PromptLength = Math.Min(ex.PromptLength, cut) };
        if (spec.MaxSequenceLength is int max && ex.Length > max)
            throw Fail.InFile(r.File, r.Where, $"the example has {ex.Length} tokens, more than the graph's sequence length {max}",
                $"pass --cutoff-len {max} (or less) to truncate long examples, or build the graph with a longer sequence length");
        return ex;
    }
}
