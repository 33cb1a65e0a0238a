using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>
/// mixlora-switch, as MoE-PEFT's SwitchSparseMoe and SwitchRouterLoss compute it (Switch Transformers' routing):
/// <code>
/// z = Wg x̃ (x̃: x jittered, for the router only),  p = softmax(z),  e = argmax p,  p_max = max p
/// priority = running count of tokens routed to e along each sequence (real tokens only, including this one)
/// kept = priority ≤ expert_capacity
/// y = p_max · E_e(x) if kept, else p_max · x           (a token over capacity passes its input, scaled)
/// y = dropout(y, ffn_dropout) while training
/// L = z_coef · mean(logsumexp(z)²) + aux_coef · E · Σ_e F_e P_e
///     F_e = fraction of tokens whose argmax is e (capacity ignored), P_e = mean p_e; pooled over layers, real tokens only
/// </code>
/// One slot per token: the experts run with weight p_max · kept, and <see cref="Routing.Passthrough"/> carries
/// p_max · (1 − kept) for the block's input.
/// </summary>
public static class SwitchRouting
{
    public static Routing Route(Builder b, Value x, Value gate, AdapterConfig cfg, MlpSite site)
    {
        var logits = Router.Logits(b, x, gate);                                            // (N, E)
        var rt = logits.DType;
        var probs = b.Softmax(logits, -1);                                                 // (N, E)
        var (pmax, idx) = b.TopK(probs, 1);                                                // (N, 1)
        var e = cfg.NumExperts;
        var onehot = b.Cast(b.Equal(idx, b.Ints(Enumerable.Range(0, e).Select(i => (long)i).ToArray())), rt);   // (N, E)
        var counted = b.Mul(onehot, b.Unsqueeze(b.Cast(site.TokenMask, rt), 1));             // padding takes no capacity
        var priority = b.ReduceSum(b.Mul(RowCumsum(b, counted, site), onehot), [1], keepDims: true);   // (N, 1)
        var kept = b.Cast(b.LessOrEqual(priority, b.Scalar(cfg.ExpertCapacity, rt)), rt);      // (N, 1)
        var weights = b.Mul(pmax, kept);                                                     // (N, 1)
        return new Routing(probs, logits, idx, weights, kept) { Passthrough = b.Sub(pmax, weights) };
    }

    /// <summary>
    /// v (N, E) summed cumulatively along each row of the batch (N = B·T, row-major): out[b, t] = Σ_{t' ≤ t} v[b, t'],
    /// as a (T, T) lower-triangular ones matrix times v viewed (B, T, E); T from the input ids, static or at run time.
    /// </summary>
    private static Value RowCumsum(Builder b, Value v, MlpSite site)
    {
        var ids = site.InputIds ?? throw Fail.Bug($"mixlora-switch at {site.Key} needs the input ids' (B, T) for per-sequence capacity");
        var e = v.S[-1].Value;
        Value t, v3;
        if (ids.Shape is { IsStatic: true } s)
        {
            t = b.Int(s[1].Value);
            v3 = b.Reshape(v, s[0].Value, s[1].Value, e);                                  // (B, T, E)
        }
        else
        {
            var bt = b.ShapeOf(ids);                                                       // [B, T]
            t = b.Squeeze(b.Gather(bt, b.Ints(1)), 0);
            v3 = b.Apply1(ShapeOps.ReshapeOp, [v, b.Concat(0, bt, b.Ints(e))]);             // (B, T, E)
        }
        var r = b.Range(b.Int(0), t, b.Int(1));                                            // (T)
        var lower = b.Cast(b.LessOrEqual(b.Unsqueeze(r, 0), b.Unsqueeze(r, 1)), v.DType);  // (T, T): [i, j] = j ≤ i
        return b.Reshape(b.MatMul(lower, v3), -1, e);                                      // (N, E)
    }

    /// <summary>The switch loss pooled over layers (see the class comment); real tokens only.</summary>
    public static Value Loss(Builder b, IReadOnlyList<Routing> layers, Value tokenMask, AdapterConfig cfg)
    {
        var rt = layers[0].Logits.DType;
        var mask = b.Cast(tokenMask, rt);                                                  // (N)
        Value? z = null;
        foreach (var r in layers)
        {
            // logsumexp(z) = z_e − log_softmax(z)_e for every e: their mean over e (no Exp overflow)
            var lse = b.ReduceMean(b.Sub(r.Logits, b.LogSoftmax(r.Logits, -1)), [-1]);     // (N)
            var zl = b.ReduceSum(b.Mul(b.Mul(lse, lse), mask));
            z = z is null ? zl : b.Add(z, zl);
        }
        var count = b.Max(b.Scale(b.ReduceSum(mask), layers.Count), b.Scalar(1, rt));      // L · real tokens
        var zLoss = b.Scale(b.Div(z!, count), cfg.RouterZLossCoef);
        return b.Add(zLoss, Router.AuxLoss(b, layers, tokenMask, cfg.NumExperts, cfg.RouterAuxLossCoef, everySlot: true));
    }
}
