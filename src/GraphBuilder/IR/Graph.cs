using System.Collections.Immutable;

namespace MixLoRA.GraphBuilder.IR;

/// <summary>An immutable ONNX-like graph: nodes in topological order.</summary>
public sealed record Graph(
    string Name,
    ImmutableArray<Value> Inputs,
    ImmutableArray<Value> Outputs,
    ImmutableArray<Node> Nodes,
    ImmutableArray<TensorData> Initializers,
    ImmutableDictionary<string, Value> Values,
    ImmutableSortedDictionary<string, int> Opsets)
{
    public const int DefaultOpset = 21;

    public Value Get(string name) => Values.TryGetValue(name, out var v) ? v : throw Fail.Bug($"graph {Name} has no value '{name}'");

    /// <summary>Histogram of op types, for tests and `--verbose` output.</summary>
    public IReadOnlyDictionary<string, int> OpCounts() =>
        Nodes.GroupBy(n => n.Key).ToDictionary(g => g.Key, g => g.Count());
}
