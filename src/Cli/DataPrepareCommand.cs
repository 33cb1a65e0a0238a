using System.CommandLine;
using System.Text.Encodings.Web;
using System.Text.Json;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.Text.Data;
using MixLoRA.Text.Tokenization;

namespace MixLoRA.Cli;

/// <summary>
/// `mixlora-data prepare`: writes, per example, what the trainer will see (ids, labels, the decoded prompt
/// and target, the task) as JSONL, so a user can check templates, masking and cutoff before training.
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

        var command = new RootCommand("mixlora-data prepare: show what the trainer will see for each example")
        {
            tokenizer, data, template, cutoff, trainOnInputs, appendEos, output,
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
            return Prepare(spec, loadTokenizer(parse.GetValue(tokenizer)!), parse.GetValue(output)!);
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
