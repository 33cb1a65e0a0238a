using System.Collections.Immutable;
using MixLoRA.GraphBuilder.Onnx;

namespace MixLoRA.Cli.Diagnostics;

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
