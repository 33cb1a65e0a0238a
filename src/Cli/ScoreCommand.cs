using System.CommandLine;
using System.Globalization;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.Runtime;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Model;

namespace MixLoRA.Cli;

/// <summary>
/// `mixlora-score --model DIR [--adapter DIR] --data FILE.jsonl [--out FILE.safetensors] [--device cpu|cuda]
/// [--dtype float32|float16|bfloat16]`: runs pre-tokenized records {"input_ids", "labels"?} as one right-padded
/// batch, prints the mean loss over shifted labels ≠ −100 (labels default to input_ids) and its perplexity,
/// and with --out writes input_ids, attention_mask (int64) and logits (float32, [N, T, V]) as safetensors.
/// </summary>
public static class ScoreCommand
{
    /// <summary>Runs with the arguments after `score`; user mistakes are thrown as <see cref="UserError"/>.</summary>
    public static int Run(string[] args, RuntimeSettings settings)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model folder (config.json + *.safetensors)", Required = true };
        var adapter = new Option<string?>("--adapter") { Description = "adapter folder (adapter_config.json + adapter_model.safetensors/.bin)" };
        var data = new Option<string>("--data") { Description = "JSONL file of {\"input_ids\": [...], \"labels\"?: [...]} records", Required = true };
        var output = new Option<string?>("--out") { Description = "safetensors file to write input_ids, attention_mask and logits to" };
        var device = new Option<string>("--device") { Description = "where to run", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var dtype = new Option<string>("--dtype") { Description = "weight and compute dtype (float16/bfloat16 need --device cuda)", DefaultValueFactory = _ => "float32" };
        dtype.AcceptOnlyFromAmong("float32", "float16", "bfloat16");
        var command = new RootCommand("mixlora-score: loss, perplexity and logits of a model (and adapter) on pre-tokenized records")
        {
            model, adapter, data, output, device, dtype,
        };
        command.SetAction(parse => Score(
            parse.GetValue(model)!, parse.GetValue(adapter), parse.GetValue(data)!, parse.GetValue(output),
            OrtRuntime.For(OrtRuntime.ParseDevice(parse.GetValue(device)!), settings), DTypes.Parse(parse.GetValue(dtype)!)));
        return command.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }

    /// <summary>Scores <paramref name="dataFile"/>, prints loss and perplexity, writes <paramref name="outFile"/> when given.</summary>
    public static int Score(string modelDir, string? adapterDir, string dataFile, string? outFile, OrtRuntime runtime, DType dtype)
    {
        if (runtime.Device == Device.Cpu && dtype != DType.Float32)
            throw Fail.User($"--dtype {dtype.Name()} runs only on the GPU", "use --device cuda, or --dtype float32 on the CPU");
        if (outFile != null && Path.GetDirectoryName(Path.GetFullPath(outFile)) is { } dir && !Directory.Exists(dir))
            throw Fail.User($"the folder of --out '{outFile}' does not exist", "create it or choose another path");
        var examples = DatasetLoader.Load(new DatasetSpec([new DataSource(dataFile, TaskType.Known["tokens"])]), null);
        var r = Scorer.Score(modelDir, adapterDir, examples, runtime, dtype);
        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine(r.LabelledTokens == 0
            ? $"records {r.Batch.B}, sequence length {r.Batch.T}: no labelled tokens (every shifted label is -100), loss undefined"
            : string.Format(inv, "records {0}, sequence length {1}, labelled tokens {2}: loss {3:F6}, perplexity {4:F4}",
                r.Batch.B, r.Batch.T, r.LabelledTokens, r.Loss, r.Perplexity));
        if (outFile != null)
        {
            Write(outFile, r);
            Console.WriteLine($"wrote input_ids, attention_mask and logits [{r.Batch.B}, {r.Batch.T}, {r.Vocab}] to {outFile}");
        }
        return 0;
    }

    /// <summary>input_ids and attention_mask (I64, [N, T]) and logits (F32, [N, T, V]), written atomically.</summary>
    public static void Write(string path, ScoreResult r)
    {
        var (n, t) = (r.Batch.B, r.Batch.T);
        SafetensorsWriter.Write(path,
        [
            TensorData.FromLongs("input_ids", r.Batch.InputIds, n, t),
            TensorData.FromLongs("attention_mask", r.Batch.AttentionMask, n, t),
            TensorData.FromFloats("logits", r.Logits, n, t, r.Vocab),
        ]);
    }
}
