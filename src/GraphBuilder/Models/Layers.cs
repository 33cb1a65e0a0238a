using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Models;

/// <summary>RMSNorm (one fused catalog op), activations and RoPE (compositions of catalog primitives, no rules of their own).</summary>
public static class Layers
{
    /// <summary>
    /// HF LlamaRMSNorm as one fused kernel (ORT SimplifiedLayerNormalization; gradient rule in
    /// <see cref="NormalizationOps"/>): x / sqrt(mean(x²) + eps) ⊙ w, the statistics in fp32.
    /// For 16-bit x the kernel forms x · r · w from the fp32 statistics and rounds its output to x's dtype
    /// (fp32 product, one rounding, on CUDA), where HF rounds the normalised value to the input dtype before
    /// multiplying by the weight; in float32 the two agree up to float32 rounding. Float64 x is composed from
    /// primitives (see <see cref="NormalizationOps.RmsNormFused"/>).
    /// <code>
    /// x ─┬─ SimplifiedLayerNormalization(axis −1, fp32 stash) ─ y
    /// w ─┘  (y = x · r · w,  r = 1/sqrt(mean(x²) + eps))
    /// </code>
    /// </summary>
    public static Value RmsNorm(this Builder b, Value x, Value weight, double eps) => b.RmsNormFused(x, weight, eps);

    public static Value Silu(this Builder b, Value x) => b.Mul(x, b.Sigmoid(x));

    /// <summary>The model's hidden_act by its HF name.</summary>
    public static Value Act(this Builder b, string name, Value x) => name switch
    {
        "silu" or "swish" => b.Silu(x),
        "gelu_pytorch_tanh" or "gelu_new" or "gelu_fast" => GeluTanh(b, x),
        "relu" => b.Max(x, b.Scalar(0, x.DType)),
        _ => throw Fail.User($"activation '{name}' is not supported", "use silu, gelu_pytorch_tanh/gelu_new or relu"),
    };

    // 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))
    private static Value GeluTanh(Builder b, Value x)
    {
        var x3 = b.Mul(b.Mul(x, x), x);
        var inner = b.Scale(b.Add(x, b.Scale(x3, 0.044715)), Math.Sqrt(2 / Math.PI));
        return b.Mul(b.Scale(x, 0.5), b.AddScalar(b.Tanh(inner), 1));
    }

    /// <summary>
    /// cos/sin tables (B, 1, T, Dh) in fp32 from position ids (B, T), as HF's rotary embedding computes
    /// them: freqs = pos ⊗ inv_freq, emb = [freqs, freqs].
    /// </summary>
    public static (Value Cos, Value Sin) RopeTables(this Builder b, Value positionIds, double[] invFreq, double attentionScaling = 1.0)
    {
        var half = invFreq.Length;
        var pos = b.Unsqueeze(b.Cast(positionIds, DType.Float32), -1);                    // (B, T, 1)
        var inv = b.Floats(invFreq.Select(f => (double)(float)f).ToArray(), DType.Float32, 1, 1, half);
        var freqs = b.Mul(pos, inv);                                                      // (B, T, Dh/2)
        var emb = b.Unsqueeze(b.Concat(-1, freqs, freqs), 1);                             // (B, 1, T, Dh)
        Value cos = b.Cos(emb), sin = b.Sin(emb);
        if (attentionScaling != 1.0) (cos, sin) = (b.Scale(cos, attentionScaling), b.Scale(sin, attentionScaling));
        return (cos, sin);
    }

    /// <summary>
    /// The tables of one RoPE setting over <paramref name="dim"/> rotated dimensions, scaled by its attention
    /// factor. longrope switches to its long factors when the largest position id + 1 exceeds the original
    /// length, as transformers' dynamic update does for the whole batch.
    /// </summary>
    public static (Value Cos, Value Sin) RopeTables(this Builder b, Value positionIds, RopeScaling rope, int dim)
    {
        var (cos, sin) = b.RopeTables(positionIds, rope.InvFreq(dim), rope.AttentionFactor);
        if (rope.Type != "longrope") return (cos, sin);
        var (lc, ls) = b.RopeTables(positionIds, rope.LongInvFreq(dim), rope.AttentionFactor);
        var last = b.ReduceMax(b.Cast(positionIds, DType.Float32));                                 // ()
        var beyond = b.Less(b.Scalar(rope.OriginalMaxPositionEmbeddings - 1, DType.Float32), last);   // () bool
        return (b.Where(beyond, lc, cos), b.Where(beyond, ls, sin));
    }

    /// <summary>
    /// x·cos + rotate_half(x)·sin for x (B, H, T, Dh); rotate_half(x) = [−x₂, x₁]. With tables narrower than Dh
    /// (partial rotary) only the first dimensions rotate; the rest pass through.
    /// </summary>
    public static Value ApplyRope(this Builder b, Value x, Value cos, Value sin)
    {
        var (dh, rot) = (x.S[-1].Value, cos.S[-1].Value);
        if (rot == dh) return Rotate(b, x, cos, sin);
        var parts = b.Split(x, -1, rot, dh - rot);
        return b.Concat(-1, Rotate(b, parts[0], cos, sin), parts[1]);
    }

    private static Value Rotate(Builder b, Value x, Value cos, Value sin)
    {
        var dh = x.S[-1].Value;
        var halves = b.Split(x, -1, dh / 2, dh / 2);
        var rotated = b.Concat(-1, b.Neg(halves[1]), halves[0]);                         // (B, H, T, Dh)
        return b.Add(b.Mul(x, b.Cast(cos, x.DType)), b.Mul(rotated, b.Cast(sin, x.DType)));
    }
}
