using MixLoRA.GraphBuilder.IR;
using MixLoRA.Runtime;

namespace MixLoRA.Cli.Diagnostics;

/// <summary>Runs a saved ONNX graph on the device with random inputs, announcing each stage (crash bisection).</summary>
public static class GraphCheck
{
    public static void Run(OrtRuntime rt, string path)
    {
        Console.Out.Write($"graph {Path.GetFileName(path)}: session ... ");
        Console.Out.Flush();
        using var runner = new GraphRunner(rt, File.ReadAllBytes(path));
        Console.Out.Write("run ... ");
        Console.Out.Flush();
        var graph = MixLoRA.GraphBuilder.Onnx.OnnxReader.Load(path);
        var rng = new Random(3);
        var feeds = graph.Inputs.ToDictionary(v => v.Name, v => RandomFeeds.For(v, rng, 2, 100, 0.02));
        var outs = runner.Run(feeds);
        var bad = outs.Where(p => p.Value.DType.IsFloat() && p.Value.Floats().Any(f => !float.IsFinite(f))).Select(p => p.Key).Take(3).ToArray();
        Console.Out.WriteLine($"ok ({outs.Count} outputs{(bad.Length > 0 ? ", non-finite: " + string.Join(", ", bad) : "")})");
        Console.Out.Flush();
    }
}
