using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>
/// A layer's routing decision: K slots per token, each an expert index and a weight. The router's dtype is fp32
/// (fp64 in float64 graphs, which the tests use). <see cref="Passthrough"/>: mixlora-switch's weight of the block's
/// input for tokens over capacity (p_max there, 0 elsewhere), (N, 1); null for the other strategies.
/// </summary>
public sealed record Routing(
    Value Probs,      // (N, E) softmax of the router logits
    Value Logits,     // (N, E)
    Value Experts,    // (N, K) int64 expert of each slot
    Value Weights,    // (N, K) weight of each slot (0 for slots a dynamic router dropped or over a switch's capacity)
    Value Selected)   // (N, K) 1 where the slot is used (all ones for top-k)
{
    public Value? Passthrough { get; init; }
}

/// <summary>
/// The router in fp32 (docs/design.md §2, §6): z = x Wgᵀ, p = softmax(z).
/// mixlora: top-k of p, weights renormalized to sum 1. mixlora-dynamic: p = softmax(z / temperature),
/// experts sorted by p, kept while the cumulative sum before them is ≤ top_p (the first to cross is kept),
/// raw probabilities, no renormalizing; K = E slots with dropped ones weighted 0.
/// </summary>
public static class Router
{
    /// <summary>The router's dtype for a compute dtype: float32, or float64 in float64 graphs.</summary>
    public static DType TypeFor(DType compute) => compute == DType.Float64 ? DType.Float64 : DType.Float32;

    /// <summary>z = x Wgᵀ in the router's dtype (<see cref="TypeFor"/>): (N, E).</summary>
    public static Value Logits(Builder b, Value x, Value gate)
    {
        var rt = TypeFor(x.DType);
        return b.Linear(b.Cast(x, rt), b.Cast(gate, rt));                    // (N, E)
    }

    public static Routing Route(Builder b, Value x, Value gate, AdapterConfig cfg)
    {
        var logits = Logits(b, x, gate);                                      // (N, E)
        return cfg.RoutingStrategy == "mixlora-dynamic" ? TopP(b, logits, cfg) : TopK(b, logits, cfg.TopK);
    }

    /// <summary>Top-k of softmax(z), the weights renormalized to sum 1 (mixlora, MoLA).</summary>
    public static Routing TopK(Builder b, Value logits, int k)
    {
        var probs = b.Softmax(logits, -1);                                    // (N, E)
        var (w, idx) = b.TopK(probs, k);                                      // (N, K)
        var norm = b.Div(w, b.ReduceSum(w, [-1], keepDims: true));
        return new Routing(probs, logits, idx, norm, b.Full(norm, 1));
    }

    private static Routing TopP(Builder b, Value logits, AdapterConfig cfg)
    {
        var e = logits.S[-1].Value;
        var scaled = cfg.Temperature is > 0 and not 1 ? b.Scale(logits, 1 / cfg.Temperature) : logits;
        var probs = b.Softmax(scaled, -1);                                    // (N, E)
        var (sorted, idx) = b.TopK(probs, e);                                 // (N, E) descending
        // cumulative sum of the probabilities before each slot: sorted · U with U[i, j] = 1 for i < j
        var strictUpper = new double[e * e];
        for (var i = 0; i < e; i++) for (var j = i + 1; j < e; j++) strictUpper[(i * e) + j] = 1;
        var before = b.MatMul(sorted, b.Floats(strictUpper, logits.DType, e, e));
        var keep = b.Cast(b.LessOrEqual(before, b.Scalar(cfg.TopP, logits.DType)), logits.DType);
        return new Routing(probs, logits, idx, b.Mul(sorted, keep), keep);
    }

    /// <summary>
    /// The reference's load-balance loss pooled over layers (MoLA: over every routed projection of every layer) with
    /// padding masked: F[j,e] = mean over real tokens of [slot j chose e], P[e] = mean prob,
    /// L = coef · E · Σ_j Σ_e F[j,e] P[e]. <paramref name="everySlot"/>: count each slot's choice even where the
    /// slot is not used (mixlora-switch counts the argmax of tokens over capacity too).
    /// </summary>
    public static Value AuxLoss(Builder b, IReadOnlyList<Routing> layers, Value tokenMask, int numExperts, double coef, bool everySlot = false)
    {
        var rt = layers[0].Probs.DType;
        var experts = b.Ints(Enumerable.Range(0, numExperts).Select(i => (long)i).ToArray());    // (E)
        tokenMask = b.Cast(tokenMask, rt);
        var m = b.Unsqueeze(tokenMask, 1);                                                       // (N, 1)
        Value? f = null, p = null;
        foreach (var r in layers)
        {
            var onehot = b.Cast(b.Equal(b.Unsqueeze(r.Experts, 2), experts), rt);                 // (N, K, E)
            onehot = b.Mul(onehot, b.Unsqueeze(everySlot ? m : b.Mul(r.Selected, m), 2));
            var fl = b.ReduceSum(onehot, [0]);                                                   // (K, E)
            var pl = b.ReduceSum(b.Mul(r.Probs, m), [0]);                                        // (E)
            (f, p) = (f is null ? fl : b.Add(f, fl), p is null ? pl : b.Add(p, pl));
        }
        var count = b.Scale(b.ReduceSum(tokenMask), layers.Count);                               // L · real tokens
        count = b.Max(count, b.Scalar(1, rt));
        var fp = b.Mul(b.Div(f!, count), b.Div(p!, count));                                     // (K, E)
        return b.Scale(b.ReduceSum(fp), coef * numExperts);
    }
}
