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
        // ONNX's RandomUniformLike takes float16/float/double only: a bfloat16 x lends its shape through float32 and the
        // draw is cast back (ORT refused the bf16 graph of mixlora-switch's jitter on the H200)
        if (x.DType == DType.BFloat16 && dtype is null) return b.Cast(b.RandomUniformLike(b.Cast(x, DType.Float32), low, high, DType.Float32, seed), DType.BFloat16);
        var attrs = new List<(string, object)> { ("low", low), ("high", high) };
        if (dtype is { } t) attrs.Add(("dtype", (long)t));
        if (seed is { } s) attrs.Add(("seed", (double)s));
        return b.Apply1(RandomUniformLikeOp, [x], A.Of([.. attrs]));
    }
}
