using System.CommandLine;
using System.Text.Encodings.Web;
using System.Text.Json;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.Text.Data;
using MixLoRA.Text.Tokenization;
using MixLoRA.Trainer.Data;

namespace MixLoRA.Cli;

/// <summary>
/// `mixlora-data prepare`: writes, per example, what the trainer will see (ids, labels, the decoded prompt
/// and target, the task) as JSONL, so a user can check templates, masking and cutoff before training. With
/// --packing it writes the rows `mixlora-train --packing` builds instead: per step of --batch-size records (file
/// order, as with --no-shuffle), each row's records, their offsets and lengths, its tokens and padding.
/// </summary>
public static class DataPrepareCommand
{
    /// <summary>
    /// Runs the command on the arguments after `prepare`; <paramref name="loadTokenizer"/> loads the tokenizer
    /// from the --tokenizer path (<see cref="CommandServices.Default"/>: a tokenizer.json or a folder holding one).
    /// </summary>
    public static int Run(string[] args, Func<string, ITokenizer> loadTokenizer)
    {
        var tokenizer = new Option<string>("--tokenizer") { Description = "tokenizer.json of the model", Required = true };
        var data = new Option<string[]>("--data")
        {
            Description = "data file (JSON array or JSONL), or TASK:FILE with TASK one of " + string.Join(", ", TaskType.Known.Keys) + "; repeat to mix tasks",
            Required = true,
            Arity = ArgumentArity.OneOrMore,
        };
        var template = new Option<string>("--template") { Description = "prompt template of instruction data", DefaultValueFactory = _ => "alpaca" };
        template.AcceptOnlyFromAmong("alpaca", "plain");
        var cutoff = new Option<int?>("--cutoff-len") { Description = "truncate every example to this many tokens" };
        var trainOnInputs = new Option<bool>("--train-on-inputs") { Description = "keep the loss on prompt tokens" };
        var appendEos = new Option<bool>("--append-eos") { Description = "append EOS to text examples (the reference does not)" };
        var output = new Option<string>("--out") { Description = "output JSONL file", Required = true };
        var packing = new Option<bool>("--packing") { Description = "write the packed rows (records, offsets) instead of the examples" };
        var seqLen = new Option<int?>("--seq-len") { Description = "row length for --packing (the graphs' --seq-len)" };
        var batchSize = new Option<int>("--batch-size") { Description = "records per step for --packing", DefaultValueFactory = _ => 8 };

        var command = new RootCommand("mixlora-data prepare: show what the trainer will see for each example")
        {
            tokenizer, data, template, cutoff, trainOnInputs, appendEos, output, packing, seqLen, batchSize,
        };
        command.SetAction(parse =>
        {
            var spec = DatasetSpec.FromArgs(parse.GetValue(data) ?? []) with
            {
                Template = parse.GetValue(template) == "plain" ? InstructionTemplate.Plain : InstructionTemplate.Alpaca,
                CutoffLen = parse.GetValue(cutoff),
                TrainOnInputs = parse.GetValue(trainOnInputs),
                AppendEos = parse.GetValue(appendEos),
            };
            if (!parse.GetValue(packing)) return Prepare(spec, loadTokenizer(parse.GetValue(tokenizer)!), parse.GetValue(output)!);
            var t = parse.GetValue(seqLen) ?? throw Fail.User("--packing without --seq-len", "pass the graphs' --seq-len, e.g. --seq-len 512");
            Fail.If(t < 2 || parse.GetValue(batchSize) < 1, $"--seq-len {t} / --batch-size {parse.GetValue(batchSize)}", "use --seq-len 2 or more and --batch-size 1 or more");
            return PrepareRows(spec with { MaxSequenceLength = t }, loadTokenizer(parse.GetValue(tokenizer)!), parse.GetValue(output)!, t, parse.GetValue(batchSize));
        });
        return command.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }

    /// <summary>Loads the examples of <paramref name="spec"/> and writes them to <paramref name="outPath"/> atomically.</summary>
    public static int Prepare(DatasetSpec spec, ITokenizer tokenizer, string outPath)
    {
        var examples = DatasetLoader.Load(spec, tokenizer);
        string full = Path.GetFullPath(outPath);
        string dir = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(dir)) throw Fail.User($"the folder of --out '{outPath}' does not exist", "create it or choose another path");
        AtomicFile.Write(full, stream => WriteExamples(stream, examples, tokenizer));
        var counts = examples.GroupBy(e => e.Task).Select(g => $"{g.Key} {g.Count()}");
        Console.WriteLine($"wrote {examples.Count} examples ({string.Join(", ", counts)}) to {outPath}");
        return 0;
    }

    /// <summary>The packed rows of each step of <paramref name="batch"/> records, written atomically; prints the padding saved.</summary>
    public static int PrepareRows(DatasetSpec spec, ITokenizer tokenizer, string outPath, int seqLen, int batch)
    {
        var examples = DatasetLoader.Load(spec, tokenizer);
        Fail.If(examples.Count == 0, "the data has no records", "check the --data files");
        var full = Path.GetFullPath(outPath);
        if (!Directory.Exists(Path.GetDirectoryName(full))) throw Fail.User($"the folder of --out '{outPath}' does not exist", "create it or choose another path");
        var stream = new BatchStream(examples, new BatchOptions(batch, 1, 0, seqLen, Packing: true), DataPosition.Start(0));
        var steps = (examples.Count + batch - 1) / batch;
        long rows = 0, tokens = 0;
        AtomicFile.Write(full, s =>
        {
            var options = new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
            for (var step = 0; step < steps; step++)
            {
                var row = 0;
                foreach (var r in stream.NextStep().SelectMany(b => b.Rows))
                {
                    var used = r.Lengths.Sum();
                    (rows, tokens) = (rows + 1, tokens + used);
                    using (var w = new Utf8JsonWriter(s, options))
                    {
                        w.WriteStartObject();
                        w.WriteNumber("step", step);
                        w.WriteNumber("row", row++);
                        WriteInts(w, "records", r.Records);
                        WriteInts(w, "offsets", r.Offsets);
                        WriteInts(w, "lengths", r.Lengths);
                        w.WriteNumber("tokens", used);
                        w.WriteNumber("padding", seqLen - used);
                        w.WriteEndObject();
                    }
                    s.WriteByte((byte)'\n');
                }
            }
        });
        var padded = (long)steps * batch * seqLen;
        Console.WriteLine($"packed {Math.Min(examples.Count, steps * batch)} records ({steps} steps of {batch}, the last topped up from the start) into {rows} rows of {seqLen}: "
            + $"padding {100.0 * (1 - ((double)tokens / (rows * seqLen))):F1}% packed vs {100.0 * (1 - ((double)tokens / padded)):F1}% one record per row; wrote {outPath}");
        return 0;
    }

    static void WriteExamples(Stream stream, IReadOnlyList<Example> examples, ITokenizer tokenizer)
    {
        var options = new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        foreach (var ex in examples)
        {
            using (var w = new Utf8JsonWriter(stream, options))
            {
                w.WriteStartObject();
                WriteInts(w, "input_ids", ex.InputIds);
                WriteInts(w, "labels", ex.Labels);
                w.WriteString("prompt", tokenizer.Decode(ex.InputIds[..ex.PromptLength]));
                w.WriteString("target", tokenizer.Decode(ex.InputIds[ex.PromptLength..]));
                w.WriteString("task", ex.Task);
                w.WriteEndObject();
            }
            stream.WriteByte((byte)'\n');
        }
    }

    static void WriteInts(Utf8JsonWriter w, string name, int[] values)
    {
        w.WriteStartArray(name);
        foreach (int v in values) w.WriteNumberValue(v);
        w.WriteEndArray();
    }
}
