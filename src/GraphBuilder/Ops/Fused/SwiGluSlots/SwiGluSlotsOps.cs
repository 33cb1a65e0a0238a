using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>
/// MixLoRA's expert activations as one kernel each way (domain <c>com.mixlora</c>, run by the trainer's own
/// kernels: C# on the CPU, NVRTC-compiled CUDA on the GPU). For token n, slot j and column f:
/// <code>
///   g = G[n,f] + DG[n,j,f]      u = U[n,f] + DU[n,j,f]      (frozen output + the slot's expert delta)
///   h = silu(g) · u             M[n,f] = Σ_j W[n,j] · h      H[n,j,f] = h, or dropout(h) with attribute ratio > 0
/// </code>
/// computed in float32 and rounded once. Composed from primitives this is ~10 passes over (N, K, F) forward
/// and ~25 backward; fused, one read of the inputs and one write of the outputs each way. The backward
/// recomputes g, u and silu from the inputs instead of keeping them. Dropout (for the experts' down-projection
/// LoRA) keeps element i of (N, K, F) when hash(seed, salt, i) ≥ ratio (<see cref="DropoutHash.Keep"/>, the same in every
/// kernel), scaled by 1/(1 − ratio): the backward regenerates the mask instead of storing it, and a recomputed
/// (checkpointed) forward draws the same one. The seed is an int64 scalar input that changes every step.
/// </summary>
public static class SwiGluSlotsOps
{
    /// <summary>Slots per token the kernels handle (their per-thread weight and dW arrays).</summary>
    public const int MaxSlots = 8;

    /// <summary>The grad step's int64 scalar input that seeds the fused dropout (a new value every micro-step).</summary>
    public const string SeedInput = "dropout_seed";

    public static readonly OpDef SwiGluSlotsOp = new("SwiGluSlots", FusedDomain.Name)
    {
        Outputs = 2,
        Infer = c => [new(c.In(2).DType, c.In(2).Shape), new(c.In(0).DType, c.In(0).Shape)],
        Grad = Backward,
        // float32 cases (float64 check inputs are cast on entry; the kernels are float32 inside)
        Cases = [
            GradCase.Float32("mixed", (b, x) => b.SwiGluSlots(x[0], x[1], x[2], x[3], x[4]).Mixed, Spec.F(3, 5), Spec.F(3, 5), Spec.F(3, 2, 5), Spec.F(3, 2, 5), Spec.F(3, 2)),
            GradCase.Float32("slots", (b, x) => b.SwiGluSlots(x[0], x[1], x[2], x[3], x[4]).H, Spec.F(2, 4), Spec.F(2, 4), Spec.F(2, 3, 4), Spec.F(2, 3, 4), Spec.F(2, 3)),
            GradCase.Float32("both", (b, x) =>
            {
                var (h, m) = b.SwiGluSlots(x[0], x[1], x[2], x[3], x[4]);
                return b.Add(b.Mul(m, m), b.Squeeze(b.SumSlices(h, 1, 2), 1));
            }, Spec.F(3, 6), Spec.F(3, 6), Spec.F(3, 2, 6), Spec.F(3, 2, 6), Spec.F(3, 2)),
            GradCase.Float32("dropout", (b, x) =>
            {
                var (h, m) = b.SwiGluSlots(x[0], x[1], x[2], x[3], x[4], x[5], 0.4, salt: 3);
                return b.Add(b.Mul(m, m), b.Squeeze(b.SumSlices(h, 1, 2), 1));
            }, Spec.F(3, 6), Spec.F(3, 6), Spec.F(3, 2, 6), Spec.F(3, 2, 6), Spec.F(3, 2), Spec.Ints([11])),
            // F = 20: the CPU kernels' vector loops (8 or 16 lanes) and their scalar tails both run
            GradCase.Float32("dropout-wide", (b, x) =>
            {
                var (h, m) = b.SwiGluSlots(x[0], x[1], x[2], x[3], x[4], x[5], 0.3, salt: 1);
                return b.Add(b.Mul(m, m), b.Squeeze(b.SumSlices(h, 1, 2), 1));
            }, Spec.F(2, 20), Spec.F(2, 20), Spec.F(2, 2, 20), Spec.F(2, 2, 20), Spec.F(2, 2), Spec.Ints([5])),
        ],
    };

    public static readonly OpDef SwiGluSlotsGradOp = new("SwiGluSlotsGrad", FusedDomain.Name)
    {
        Outputs = 5,
        Infer = c => [new(c.In(2).DType, c.In(2).Shape), new(c.In(3).DType, c.In(3).Shape), new(c.In(0).DType, c.In(0).Shape),
            new(c.In(1).DType, c.In(1).Shape), new(c.In(4).DType, c.In(4).Shape)],
        NoGradReason = "the backward of SwiGluSlots (no second derivatives are taken)",
    };

    /// <summary>
    /// (H (N, K, F), Mixed (N, F)) for G, U (N, F), DG, DU (N, K, F) in one compute dtype and W (N, K) float32;
    /// H is dropout(h) when <paramref name="ratio"/> &gt; 0 (then <paramref name="seed"/>, an int64 scalar, is required;
    /// <paramref name="salt"/> tells nodes sharing a seed apart, e.g. the layer).
    /// </summary>
    public static (Value H, Value Mixed) SwiGluSlots(this Builder b, Value g, Value u, Value dg, Value du, Value w, Value? seed = null, double ratio = 0, long salt = 0)
    {
        Check(g, u, dg, du, w);
        if (ratio is < 0 or >= 1 || (ratio > 0 && seed is not { DType: DType.Int64 })) throw Fail.Bug($"SwiGluSlots dropout needs 0 ≤ ratio < 1 and an int64 seed; got {ratio}, {seed}");
        var r = ratio > 0
            ? b.Apply(SwiGluSlotsOp, [g, u, dg, du, w, seed], A.Of(("ratio", ratio), ("salt", salt)))
            : b.Apply(SwiGluSlotsOp, [g, u, dg, du, w]);
        return (r[0], r[1]);
    }

    private static void Check(Value g, Value u, Value dg, Value du, Value w)
    {
        if (g.DType != u.DType || g.DType != dg.DType || g.DType != du.DType) throw Fail.Bug($"SwiGluSlots needs one dtype for G, U, DG, DU; got {g}, {u}, {dg}, {du}");
        if (w.DType != DType.Float32) throw Fail.Bug($"SwiGluSlots weights are float32; got {w}");
        if (g.Rank != 2 || u.Rank != 2 || dg.Rank != 3 || du.Rank != 3 || w.Rank != 2) throw Fail.Bug($"SwiGluSlots shapes: G, U (N, F), DG, DU (N, K, F), W (N, K); got {g}, {u}, {dg}, {du}, {w}");
    }

    /// <summary>One kernel: dH_total = W·dM + mask·dH/(1 − ratio); the rest of the chain rule recomputed from the inputs.</summary>
    private static Value?[] Backward(GradContext g)
    {
        var (dh, dm) = (g.OutGrads[0], g.OutGrads[1]);
        var seed = g.Inputs.Count > 5 ? g.Inputs[5] : null;
        var attrs = seed is null ? null : A.Of(("ratio", (double)g.Node.Float("ratio", 0)), ("salt", g.Node.Int("salt", 0)));
        var r = g.B.Apply(SwiGluSlotsGradOp, seed is null ? [g.X(0), g.X(1), g.X(2), g.X(3), g.X(4), dm, dh] : [g.X(0), g.X(1), g.X(2), g.X(3), g.X(4), dm, dh, seed], attrs);
        return [r[2], r[3], r[0], r[1], r[4]];
    }
}
