using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Models;

/// <summary>Where the decoder's frozen weights come from: graph inputs (training) or initializers (export).</summary>
public interface IWeightSource
{
    /// <summary>The weight with this HF key and shape, in the compute dtype.</summary>
    Value Get(Builder b, string key, long[] shape);
}

/// <summary>
/// Weights as graph inputs named by their HF keys, bound once to device tensors by the runtime (docs/design.md §2).
/// Records what the graph needs so the runtime can validate shapes against the checkpoint.
/// </summary>
public sealed class InputWeights(DType dtype) : IWeightSource
{
    private readonly Dictionary<string, Value> _declared = new(StringComparer.Ordinal);

    public DType DType { get; } = dtype;

    /// <summary>Key → requested shape, in first-use order.</summary>
    public IReadOnlyDictionary<string, Value> Declared => _declared;

    public Value Get(Builder b, string key, long[] shape)
    {
        if (_declared.TryGetValue(key, out var v)) return v;
        v = b.Input(key, DType, Shape.Of(shape));
        _declared[key] = v;
        return v;
    }
}
