using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>
/// MixLoRA's expert activations as one kernel each way (domain <c>com.mixlora</c>, run by the trainer's own
/// kernels: C# on the CPU, NVRTC-compiled CUDA on the GPU). For token n, slot j and column f:
/// <code>
///   g = G[n,f] + DG[n,j,f]      u = U[n,f] + DU[n,j,f]      (frozen output + the slot's expert delta)
///   H[n,j,f] = silu(g) · u      M[n,f] = Σ_j W[n,j] · H[n,j,f]
/// </code>
/// computed in float32 and rounded once. Composed from primitives this is ~10 passes over (N, K, F) forward
/// and ~25 backward; fused, one read of the inputs and one write of the outputs each way. The backward
/// recomputes g, u and silu from the inputs instead of keeping them.
/// </summary>
public static class SwiGluSlotsOps
{
    public const string Domain = "com.mixlora";

    /// <summary>Slots per token the kernels handle (their per-thread weight and dW arrays).</summary>
    public const int MaxSlots = 8;

    /// <summary>Compute dtypes the trainer has kernels for, per device (float32 routing weights always).</summary>
    public static readonly DType[] CpuTypes = [DType.Float32];
    public static readonly DType[] CudaTypes = [DType.BFloat16, DType.Float16, DType.Float32];

    public static readonly OpDef SwiGluSlotsOp = new("SwiGluSlots", Domain)
    {
        Outputs = 2,
        Infer = c => [new(c.In(2).DType, c.In(2).Shape), new(c.In(0).DType, c.In(0).Shape)],
        Grad = Backward,
        // float32 cases (float64 check inputs are cast on entry; the kernels are float32 inside)
        Cases = [
            F32("mixed", (b, x) => b.SwiGluSlots(x[0], x[1], x[2], x[3], x[4]).Mixed, Spec.F(3, 5), Spec.F(3, 5), Spec.F(3, 2, 5), Spec.F(3, 2, 5), Spec.F(3, 2)),
            F32("slots", (b, x) => b.SwiGluSlots(x[0], x[1], x[2], x[3], x[4]).H, Spec.F(2, 4), Spec.F(2, 4), Spec.F(2, 3, 4), Spec.F(2, 3, 4), Spec.F(2, 3)),
            F32("both", (b, x) =>
            {
                var (h, m) = b.SwiGluSlots(x[0], x[1], x[2], x[3], x[4]);
                return b.Add(b.Mul(m, m), b.Squeeze(b.SumSlices(h, 1, 2), 1));
            }, Spec.F(3, 6), Spec.F(3, 6), Spec.F(3, 2, 6), Spec.F(3, 2, 6), Spec.F(3, 2)),
        ],
    };

    public static readonly OpDef SwiGluSlotsGradOp = new("SwiGluSlotsGrad", Domain)
    {
        Outputs = 5,
        Infer = c => [new(c.In(2).DType, c.In(2).Shape), new(c.In(3).DType, c.In(3).Shape), new(c.In(0).DType, c.In(0).Shape),
            new(c.In(1).DType, c.In(1).Shape), new(c.In(4).DType, c.In(4).Shape)],
        NoGradReason = "the backward of SwiGluSlots (no second derivatives are taken)",
    };

    /// <summary>
    /// (H (N, K, F), Mixed (N, F)) for G, U (N, F), DG, DU (N, K, F) in one compute dtype and W (N, K) float32.
    /// </summary>
    public static (Value H, Value Mixed) SwiGluSlots(this Builder b, Value g, Value u, Value dg, Value du, Value w)
    {
        Check(g, u, dg, du, w);
        var r = b.Apply(SwiGluSlotsOp, [g, u, dg, du, w]);
        return (r[0], r[1]);
    }

    private static void Check(Value g, Value u, Value dg, Value du, Value w)
    {
        if (g.DType != u.DType || g.DType != dg.DType || g.DType != du.DType) throw Fail.Bug($"SwiGluSlots needs one dtype for G, U, DG, DU; got {g}, {u}, {dg}, {du}");
        if (w.DType != DType.Float32) throw Fail.Bug($"SwiGluSlots weights are float32; got {w}");
        if (g.Rank != 2 || u.Rank != 2 || dg.Rank != 3 || du.Rank != 3 || w.Rank != 2) throw Fail.Bug($"SwiGluSlots shapes: G, U (N, F), DG, DU (N, K, F), W (N, K); got {g}, {u}, {dg}, {du}, {w}");
    }

    /// <summary>One kernel: dH_total = W·dM + dH; the rest of the chain rule recomputed from the inputs.</summary>
    private static Value?[] Backward(GradContext g)
    {
        var (dh, dm) = (g.OutGrads[0], g.OutGrads[1]);
        var r = g.B.Apply(SwiGluSlotsGradOp, [g.X(0), g.X(1), g.X(2), g.X(3), g.X(4), dm, dh]);
        return [r[2], r[3], r[0], r[1], r[4]];
    }

    /// <summary>A gradient case run in float32 (weights included): the float64 check inputs are cast on entry.</summary>
    private static GradCase F32(string label, Func<Builder, Value[], Value> forward, params Spec[] inputs) =>
        GradCase.Of(label, (b, x) => forward(b, x.Select(v => b.Cast(v, DType.Float32)).ToArray()), inputs) with { Eps = 3e-3, Tol = 5e-4 };
}
