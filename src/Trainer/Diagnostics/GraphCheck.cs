using MixLoRA.GraphBuilder.IO;
using System.Collections.Immutable;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Trainer.Model;
using MixLoRA.Trainer.Runtime;

namespace MixLoRA.Trainer.Diagnostics;

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
        var feeds = graph.Inputs.ToDictionary(v => v.Name, v => Random(v, rng));
        var outs = runner.Run(feeds);
        var bad = outs.Where(p => p.Value.DType.IsFloat() && p.Value.Floats().Any(f => !float.IsFinite(f))).Select(p => p.Key).Take(3).ToArray();
        Console.Out.WriteLine($"ok ({outs.Count} outputs{(bad.Length > 0 ? ", non-finite: " + string.Join(", ", bad) : "")})");
        Console.Out.Flush();
    }

    private static HostTensor Random(Value v, Random rng)
    {
        var shape = v.S.ToLongs();
        var n = (int)shape.Aggregate(1L, (a, b) => a * b);
        return v.DType switch
        {
            DType.Int64 => HostTensor.Of(Enumerable.Range(0, n).Select(_ => v.Name == "attention_mask" ? 1L : rng.Next(2, 100)).ToArray(), shape),
            DType.Bool => HostTensor.Of(Enumerable.Range(0, n).Select(_ => false).ToArray(), shape),
            _ => new HostTensor(v.DType, shape, TensorConvert.FromFloat32(Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() - 0.5) * 0.04)).ToArray(), v.DType)),
        };
    }
}
