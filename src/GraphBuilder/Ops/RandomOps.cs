using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>Random tensors (ONNX RandomUniformLike): noise sources such as MixLoRA's router jitter.</summary>
public static class RandomOps
{
    public static readonly OpDef RandomUniformLikeOp = new("RandomUniformLike")
    {
        Infer = c => c.Node.Attrs.ContainsKey("dtype") ? InferContext.Of((DType)c.Node.Int("dtype"), c.In(0).Shape) : c.Same(),
        NoGradReason = "random noise",
    };

    /// <summary>U(low, high) noise with x's shape (and x's dtype unless <paramref name="dtype"/> is given).</summary>
    public static Value RandomUniformLike(this Builder b, Value x, double low, double high, DType? dtype = null, long? seed = null)
    {
        var attrs = new List<(string, object)> { ("low", low), ("high", high) };
        if (dtype is { } t) attrs.Add(("dtype", (long)t));
        if (seed is { } s) attrs.Add(("seed", (double)s));
        return b.Apply1(RandomUniformLikeOp, [x], A.Of([.. attrs]));
    }
}
