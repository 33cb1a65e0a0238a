using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;

namespace MixLoRA.Cli.Diagnostics;

/// <summary>Runs every node of a saved graph alone (constant inputs embedded), naming it before it runs.</summary>
public static class NodeBisect
{
    public static void Run(OrtRuntime rt, string path)
    {
        var g = MixLoRA.GraphBuilder.Onnx.OnnxReader.Load(path);
        var consts = g.Nodes.Where(n => n.OpType == "Constant").ToDictionary(n => n.Outputs[0], n => (TensorData)n.Attrs["value"]);
        var rng = new Random(5);
        var seen = new HashSet<string>();
        var skip = rt.Settings.BisectSkip;
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
                feeds[v.Name] = RandomFeeds.For(v, rng, 0, 2, 0.5);
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
}
