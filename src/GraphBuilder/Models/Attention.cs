using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Models;

/// <summary>Causal grouped-query self-attention with RoPE, padding mask, sliding window and KV cache.</summary>
public static class Attention
{
    /// <summary>
    /// Which keys each query may see, broadcastable to scores (B, Hkv, G, T, S): key j ≤ query i (positions
    /// offset by the past length), i − j &lt; window when set, and the key is not padding. With
    /// <paramref name="segments"/> (no past: S = T) the mask holds record ids and a key must also belong to the
    /// query's record (block-diagonal causal attention over packed records; a window counts within the record,
    /// as row offsets there differ exactly as positions do).
    /// </summary>
    public static Value Mask(Builder b, Value attentionMask, Value pastLen, Value seqLen, Value totalLen, int? window, bool segments = false)
    {
        if (segments) return SegmentMask(b, attentionMask, seqLen, window);
        var one = b.Int(1);
        var iq = b.Unsqueeze(b.Range(pastLen, b.Add(pastLen, seqLen), one), 1);   // (T, 1)
        var jk = b.Unsqueeze(b.Range(b.Int(0), totalLen, one), 0);                                        // (1, S)
        var allowed = b.LessOrEqual(jk, iq);                                                               // (T, S)
        if (window is { } w) allowed = b.And(allowed, b.Less(b.Sub(iq, jk), b.Int(w)));
        var pad = b.Unsqueeze(b.Cast(attentionMask, DType.Bool), 1, 2, 3);                                 // (B, 1, 1, 1, S)
        return b.And(b.Unsqueeze(allowed, 0, 1, 2), pad);                                                  // (B, 1, 1, T, S)
    }

    //  seg (B, T) ─unsq→ (B,1,1,T,1) ─┐
    //  seg (B, T) ─unsq→ (B,1,1,1,T) ─┴─ == ─ and (key ≠ 0) ─ and causal[window] (T, T) ─→ (B, 1, 1, T, T)
    private static Value SegmentMask(Builder b, Value seg, Value seqLen, int? window)
    {
        var one = b.Int(1);
        var iq = b.Unsqueeze(b.Range(b.Int(0), seqLen, one), 1);                                          // (T, 1)
        var jk = b.Unsqueeze(b.Range(b.Int(0), seqLen, one), 0);                                          // (1, T)
        var allowed = b.LessOrEqual(jk, iq);                                                               // (T, T)
        if (window is { } w) allowed = b.And(allowed, b.Less(b.Sub(iq, jk), b.Int(w)));
        var same = b.Equal(b.Unsqueeze(seg, 1, 2, 4), b.Unsqueeze(seg, 1, 2, 3));                        // (B, 1, 1, T, T)
        var real = b.Not(b.Equal(b.Unsqueeze(seg, 1, 2, 3), b.Int(0)));                                    // (B, 1, 1, 1, T)
        return b.And(b.And(same, real), b.Unsqueeze(allowed, 0, 1, 2));                                  // (B, 1, 1, T, T)
    }

    /// <summary>
    /// The additive form of <see cref="Mask"/> in the compute dtype: 0 where a key is visible, half the
    /// dtype's lowest value where not (half, so s + bias cannot overflow to −∞ in float16 and a fully masked
    /// row stays uniform rather than NaN, as with HF's finfo.min). Built once per mask and shared by layers.
    /// </summary>
    public static Value Bias(Builder b, Value allowed, DType compute) =>
        b.Where(allowed, b.Scalar(0, compute), b.Scalar(compute.Lowest() / 2, compute));              // (B, 1, 1, T, S)

    /// <summary>
    /// The bias expanded once to the scores' full shape (B, Hkv, G, T, S) when B and T are static (training
    /// graphs): every layer's add is then a same-shape add, which ORT's CUDA kernels run vectorized (the
    /// broadcast add over heads took 236 µs per TinyLlama layer). Dynamic shapes keep the broadcast.
    /// </summary>
    public static Value FullBias(Builder b, Value bias, Dim bsz, Dim t, int numKvHeads, int groups) =>
        bsz.IsStatic && t.IsStatic && bias.S[-1].IsStatic
            ? b.Expand(bias, bsz.Value, numKvHeads, groups, t.Value, bias.S[-1].Value)                  // (B, Hkv, G, T, S)
            : bias;

    /// <summary>
    /// softmax(q kᵀ / √Dh + bias) v with q grouped as (B, Hkv, G, T, Dh) so K/V are never repeated. The
    /// softmax runs in the compute dtype: ORT's 16-bit softmax accumulates in fp32, so the forward equals an
    /// fp32 softmax of the same bf16 scores rounded once, with no (B, H, T, S) fp32 copies; the additive
    /// bias has no backward kernel (masked probabilities are exactly 0, so their gradient is too).
    /// <code>
    /// q (B,H,T,Dh) ─reshape→ (B,Hkv,G,T,Dh) ─┐
    /// k (B,Hkv,S,Dh) ─unsq→ (B,Hkv,1,S,Dh) ─ qkᵀ·scale ─ + bias ─ softmax ─ ·v ─→ (B,H,T,Dh)
    /// </code>
    /// </summary>
    /// <param name="softcap">cap · tanh(s / cap) on the scaled scores before the mask (Gemma 2), when set.</param>
    public static Value Scores(Builder b, Value q, Value k, Value v, Value bias, int numKvHeads, double? scale = null, double? softcap = null)
    {
        var (bsz, h, t, dh) = (q.S[0], q.S[1].Value, q.S[2], q.S[3].Value);
        var g = h / numKvHeads;
        var q5 = b.Reshape(q, 0, numKvHeads, g, -1, dh);                                  // (B, Hkv, G, T, Dh)
        var k5 = b.Unsqueeze(k, 2);                                                       // (B, Hkv, 1, S, Dh)
        var v5 = b.Unsqueeze(v, 2);                                                       // (B, Hkv, 1, S, Dh)
        var s = b.Scale(b.MatMul(q5, b.SwapLast(k5)), scale ?? 1.0 / Math.Sqrt(dh));      // (B, Hkv, G, T, S)
        if (softcap is { } cap) s = b.Scale(b.Tanh(b.Scale(s, 1 / cap)), cap);
        var p = b.Softmax(b.Add(s, bias), -1);                                            // (B, Hkv, G, T, S)
        var o = b.MatMul(p, v5);                                                          // (B, Hkv, G, T, Dh)
        return b.Refine(b.Reshape(o, 0, h, -1, dh), Shape.Of(bsz, h, t, dh));           // (B, H, T, Dh)
    }
}
