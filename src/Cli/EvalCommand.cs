using System.CommandLine;
using MixLoRA.Inference.Evaluation;
using MixLoRA.Inference.Generation;
using MixLoRA.Runtime;
using MixLoRA.Text.Data;
using MixLoRA.Text.Tokenization;

namespace MixLoRA.Cli;

/// <summary>
/// `mixlora-eval --model DIR [--adapter DIR] --task arc-e|arc-c|boolq|obqa|piqa --data FILE [--limit N]
/// [--out FILE.json] [--device cpu|cuda]`: accuracy as the reference scores it, and per-layer expert load for MixLoRA.
/// </summary>
public static class EvalCommand
{
    public static readonly string[] Tasks = ["arc-e", "arc-c", "boolq", "obqa", "piqa"];

    /// <summary>Runs with the arguments after the command name; <paramref name="loadTokenizer"/> loads the model folder's tokenizer.</summary>
    public static int Run(string[] args, Func<string, ITokenizer> loadTokenizer, RuntimeSettings settings)
    {
        var model = new Option<string>("--model") { Description = "exported folder, or HF model folder", Required = true };
        var adapter = new Option<string?>("--adapter") { Description = "adapter folder (HF model) or .onnx_adapter file (exported model)" };
        var task = new Option<string>("--task") { Description = "task layout of --data", Required = true };
        task.AcceptOnlyFromAmong(Tasks);
        var data = new Option<string>("--data") { Description = "JSON/JSONL file in the task's public layout", Required = true };
        var limit = new Option<int?>("--limit") { Description = "score the first N records only" };
        var output = new Option<string?>("--out") { Description = "write the report as JSON here" };
        var device = new Option<string>("--device") { Description = "cpu or cuda", DefaultValueFactory = _ => "cpu" };
        var command = new RootCommand("mixlora-eval: commonsense accuracy of a model (+ adapter)")
        {
            model, adapter, task, data, limit, output, device,
        };
        command.SetAction(p =>
        {
            var taskName = p.GetValue(task)!;
            var dataPath = p.GetValue(data)!;
            var items = RecordText.ReadCommonsense(new DataSource(dataPath, TaskType.Known[taskName]));
            if (p.GetValue(limit) is { } n)
            {
                if (n < 1) throw GraphBuilder.Fail.User($"--limit {n} is not positive", "use e.g. 100");
                items = items.Take(n).ToList();
            }
            var dir = p.GetValue(model)!;
            using var source = ModelSource.Open(dir, p.GetValue(adapter), OrtRuntime.For(OrtRuntime.ParseDevice(p.GetValue(device)!), settings), routerOutputs: true);
            var report = CommonsenseEval.Run(source.Model, loadTokenizer(dir), items, taskName, Console.Error);
            Console.WriteLine($"{taskName}: accuracy {report.Accuracy:F4} ({report.Correct}/{report.Count})");
            if (report.ExpertLoad is { } load)
            {
                for (var l = 0; l < load.Count; l++) Console.WriteLine($"layer {l} expert load: {string.Join(" ", load[l].Select(x => x.ToString("F3", System.Globalization.CultureInfo.InvariantCulture)))}");
            }
            if (p.GetValue(output) is { } outPath) CommonsenseEval.Save(outPath, report, dataPath, dir, p.GetValue(adapter));
            return 0;
        });
        return command.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }
}
