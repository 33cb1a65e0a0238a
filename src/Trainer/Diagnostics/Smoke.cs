using System.Collections.Immutable;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Trainer.Model;
using MixLoRA.Trainer.Runtime;

namespace MixLoRA.Trainer.Diagnostics;

/// <summary>Small runs, each announced before it starts, to locate a failing runtime layer.</summary>
public static class Smoke
{
    public static void Run(OrtRuntime rt)
    {
        Step("fp32 Add, host tensors", () => Add(rt, DType.Float32));
        if (rt.Device == Device.Cuda) Step("bf16 MatMul, host tensors", () => MatMul(rt, DType.BFloat16));
        Step("device tensors + IoBinding", () => Bound(rt));
    }

    private static void Step(string name, Action body)
    {
        Console.Out.Write($"smoke: {name} ... ");
        Console.Out.Flush();
        body();
        Console.Out.WriteLine("ok");
        Console.Out.Flush();
    }

    private static void Add(OrtRuntime rt, DType t)
    {
        var b = new Builder("smoke");
        var x = b.Input("x", t, 2, 3);
        b.Output(b.Add(x, x), "y");
        using var r = new GraphRunner(rt, b.Build());
        var y = r.Run(new Dictionary<string, HostTensor> { ["x"] = HostTensor.Of(new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3) })["y"].Floats();
        if (y[5] != 12) throw new InvalidOperationException($"wrong result {y[5]}");
    }

    private static void MatMul(OrtRuntime rt, DType t)
    {
        var b = new Builder("smoke");
        var x = b.Input("x", t, 64, 64);
        b.Output(b.Cast(b.MatMul(x, x), DType.Float32), "y");
        using var r = new GraphRunner(rt, b.Build());
        var ones = Enumerable.Repeat(1f, 64 * 64).ToArray();
        var y = r.Run(new Dictionary<string, HostTensor> { ["x"] = new(t, [64, 64], WeightLoader.Encode(ones, t)) })["y"].Floats();
        if (y[0] != 64) throw new InvalidOperationException($"wrong result {y[0]}");
    }

    private static void Bound(OrtRuntime rt)
    {
        var b = new Builder("smoke");
        var x = b.Input("x", DType.Float32, 4);
        b.Output(b.Mul(x, x), "y");
        using var s = new BoundSession(rt, OnnxWriter.ToBytes(b.Build()));
        Step("  allocator", () => rt.DeviceAllocator());
        using var store = new DeviceTensors(rt, s.Session);
        Microsoft.ML.OnnxRuntime.OrtValue? dx = null, dy = null;
        Step("  allocate", () => dy = store.Allocate(DType.Float32, [4]));
        Step("  upload", () => dx = store.Upload(HostTensor.Of(new float[] { 1, 2, 3, 4 }, 4)));
        Step("  download", () => store.Download(dx!));
        Step("  bound run", () => s.Run(new Dictionary<string, Microsoft.ML.OnnxRuntime.OrtValue> { ["x"] = dx! }, new Dictionary<string, Microsoft.ML.OnnxRuntime.OrtValue> { ["y"] = dy! }));
        var y = store.Download(dy!).Floats();
        if (y[3] != 16) throw new InvalidOperationException($"wrong result {y[3]}");
    }
}

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
            _ => new HostTensor(v.DType, shape, WeightLoader.Encode(Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() - 0.5) * 0.04)).ToArray(), v.DType)),
        };
    }
}

/// <summary>Runs every node of a saved graph alone (constant inputs embedded), naming it before it runs.</summary>
public static class NodeBisect
{
    public static void Run(OrtRuntime rt, string path)
    {
        var g = MixLoRA.GraphBuilder.Onnx.OnnxReader.Load(path);
        var consts = g.Nodes.Where(n => n.OpType == "Constant").ToDictionary(n => n.Outputs[0], n => (TensorData)n.Attrs["value"]);
        var rng = new Random(5);
        var seen = new HashSet<string>();
        var skip = (Environment.GetEnvironmentVariable("MIXLORA_BISECT_SKIP") ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries).ToHashSet();
        foreach (var node in g.Nodes.Where(n => n.OpType != "Constant" && !skip.Contains(n.OpType)))
        {
            var key = node.OpType + string.Join(",", node.Inputs.Select(i => i.Length == 0 ? "-" : g.Get(i).ToString().Split(':')[1]));
            if (!seen.Add(key)) continue;
            var ins = node.Inputs.Where(i => i.Length > 0).Select(g.Get).ToArray();
            if (ins.Any(v => !consts.ContainsKey(v.Name) && v.Shape is not { IsStatic: true })) continue;
            var b = new Builder("node");
            var map = new Dictionary<string, Value>();
            var feeds = new Dictionary<string, HostTensor>();
            foreach (var v in ins.DistinctBy(v => v.Name))
            {
                if (consts.TryGetValue(v.Name, out var t)) { map[v.Name] = b.Const(t); continue; }
                map[v.Name] = b.Input(v.Name, v.DType, v.Shape);
                feeds[v.Name] = Random(v, rng);
            }
            var op = Catalog.Find(node.Key)!;
            var outs = b.Apply(op, node.Inputs.Select(i => i.Length == 0 ? null : map[i]).ToArray(), node.Attrs, outputs: node.Outputs.Length);
            foreach (var o in outs) b.Output(o);
            Console.Out.Write($"node {node.OpType} [{key}] ... ");
            Console.Out.Flush();
            using var runner = new GraphRunner(rt, OnnxWriter.ToBytes(b.Build()));
            runner.Run(feeds);
            Console.Out.WriteLine("ok");
            Console.Out.Flush();
        }
    }

    private static HostTensor Random(Value v, Random rng)
    {
        var shape = v.S.ToLongs();
        var n = (int)shape.Aggregate(1L, (a, b) => a * b);
        return v.DType switch
        {
            DType.Int64 => HostTensor.Of(Enumerable.Range(0, n).Select(_ => (long)rng.Next(0, 2)).ToArray(), shape),
            DType.Bool => HostTensor.Of(Enumerable.Range(0, n).Select(_ => rng.Next(2) == 1).ToArray(), shape),
            _ => new HostTensor(v.DType, shape, WeightLoader.Encode(Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray(), v.DType)),
        };
    }
}

/// <summary>The first K nodes of a saved graph, outputs = the last node's outputs (crash bisection).</summary>
public static class PrefixGraph
{
    public static string Write(string path, int k)
    {
        var g = MixLoRA.GraphBuilder.Onnx.OnnxReader.Load(path);
        var nodes = g.Nodes.Take(k).ToImmutableArray();
        var last = nodes[^1];
        Console.Out.WriteLine($"prefix {k}/{g.Nodes.Length}: last node {last.OpType} '{last.Name}' inputs [{string.Join(", ", last.Inputs.Where(i => i.Length > 0).Select(i => g.Get(i).ToString()))}]");
        var outs = last.Outputs.Select(g.Get).ToImmutableArray();
        var cut = g with { Nodes = nodes, Outputs = outs };
        var file = Path.Combine(Path.GetTempPath(), $"prefix-{k}.onnx");
        File.WriteAllBytes(file, OnnxWriter.ToBytes(cut));
        return file;
    }
}
