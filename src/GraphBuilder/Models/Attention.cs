using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Models;

/// <summary>Causal grouped-query self-attention with RoPE, padding mask, sliding window and KV cache.</summary>
public static class Attention
{
    /// <summary>
    /// Which keys each query may see, broadcastable to scores (B, Hkv, G, T, S): key j ≤ query i (positions
    /// offset by the past length), i − j &lt; window when set, and the key is not padding.
    /// </summary>
    public static Value Mask(Builder b, Value attentionMask, Value pastLen, Value seqLen, Value totalLen, int? window)
    {
        var one = b.Int(1);
        var iq = b.Unsqueeze(b.Range(pastLen, b.Add(pastLen, seqLen), one), 1);   // (T, 1)
        var jk = b.Unsqueeze(b.Range(b.Int(0), totalLen, one), 0);                                        // (1, S)
        var allowed = b.LessOrEqual(jk, iq);                                                               // (T, S)
        if (window is { } w) allowed = b.And(allowed, b.Less(b.Sub(iq, jk), b.Int(w)));
        var pad = b.Unsqueeze(b.Cast(attentionMask, DType.Bool), 1, 2, 3);                                 // (B, 1, 1, 1, S)
        return b.And(b.Unsqueeze(allowed, 0, 1, 2), pad);                                                  // (B, 1, 1, T, S)
    }

    /// <summary>
    /// softmax(q kᵀ / √Dh + mask) v with q grouped as (B, Hkv, G, T, Dh) so K/V are never repeated.
    /// <code>
    /// q (B,H,T,Dh) ─reshape→ (B,Hkv,G,T,Dh) ─┐
    /// k (B,Hkv,S,Dh) ─unsq→ (B,Hkv,1,S,Dh) ─ qkᵀ·scale ─ where(mask) ─ softmax32 ─ ·v ─→ (B,H,T,Dh)
    /// </code>
    /// </summary>
    public static Value Scores(Builder b, Value q, Value k, Value v, Value allowed, int numKvHeads, double? scale = null)
    {
        var (bsz, h, t, dh) = (q.S[0], q.S[1].Value, q.S[2], q.S[3].Value);
        var g = h / numKvHeads;
        var q5 = b.Reshape(q, 0, numKvHeads, g, -1, dh);                                  // (B, Hkv, G, T, Dh)
        var k5 = b.Unsqueeze(k, 2);                                                       // (B, Hkv, 1, S, Dh)
        var v5 = b.Unsqueeze(v, 2);                                                       // (B, Hkv, 1, S, Dh)
        var s = b.Scale(b.MatMul(q5, b.SwapLast(k5)), scale ?? 1.0 / Math.Sqrt(dh));      // (B, Hkv, G, T, S)
        var s32 = b.Cast(s, DType.Float32);
        var masked = b.Where(allowed, s32, b.Scalar(float.MinValue, DType.Float32));
        var p = b.Cast(b.Softmax(masked, -1), q.DType);                                   // (B, Hkv, G, T, S)
        var o = b.MatMul(p, v5);                                                          // (B, Hkv, G, T, Dh)
        return b.Refine(b.Reshape(o, 0, h, -1, dh), Shape.Of(bsz, h, t, dh));           // (B, H, T, Dh)
    }
}
