using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>
/// Each slot's expert LoRA as one kernel each way (domain <c>com.mixlora</c>, the trainer's own CPU kernels):
/// <code>
///   Y[n, j] = s · B_e (A_e X[n(, j)])     e = Experts[n, j], A_e = A[e·R : (e+1)·R, :] (R, in), B_e = B[:, e·R : (e+1)·R] (out, R)
///   backward: z = s · A_e x,  dz = s · B_eᵀ dy,  dB_e += dy zᵀ,  dA_e += dz xᵀ,  dx (+)= A_eᵀ dz
/// </code>
/// X is (N, in), shared by a token's K slots, or (N, K, in), one row per slot; A and B are the experts' stacked
/// LoRA A (E·R, in) and B (out, E·R). It costs N·K·R·(in + out) multiply-adds where the masked formulation
/// (<see cref="Adapters.ExpertLoras"/>'s rank-space mask times all of B) costs N·K·E·R·out: on CPU shapes, where the
/// experts' rank E·R is near the hidden size, that GEMM was most of the MixLoRA step.
/// </summary>
public static class SlotLoraOps
{
    public static readonly OpDef SlotLoraOp = new("SlotLora", FusedDomain.Name)
    {
        Infer = c =>
        {
            var (x, e, bw) = (c.In(0), c.In(3), c.In(2));
            var shape = e.Shape is { } es && bw.Shape is { } bs ? Shape.Of(es[0], es[1], bs[0]) : null;
            return [new(x.DType, shape)];
        },
        Grad = Backward,
        // 3 experts of rank 2; slot experts include a token whose two slots share an expert (dynamic routing can)
        Cases = [
            GradCase.Float32("shared-x", (b, x) => b.SlotLora(x[0], x[1], x[2], x[3], 2, 1.5), Spec.F(4, 5), Spec.F(6, 5), Spec.F(3, 6), Spec.Ints([0, 2, 1, 0, 2, 1, 1, 1], 4, 2)),
            GradCase.Float32("per-slot-x", (b, x) => b.SlotLora(x[0], x[1], x[2], x[3], 2, 0.5), Spec.F(3, 2, 4), Spec.F(6, 4), Spec.F(5, 6), Spec.Ints([2, 0, 1, 2, 0, 1], 3, 2)),
            GradCase.Float32("one-slot", (b, x) => b.Mul(b.SlotLora(x[0], x[1], x[2], x[3], 2, 2), x[4]), Spec.F(3, 4), Spec.F(6, 4), Spec.F(3, 6), Spec.Ints([1, 0, 1], 3, 1), Spec.F(3, 1, 3)),
        ],
    };

    public static readonly OpDef SlotLoraGradOp = new("SlotLoraGrad", FusedDomain.Name)
    {
        Outputs = 3,
        Infer = c => [new(c.In(0).DType, c.In(0).Shape), new(c.In(1).DType, c.In(1).Shape), new(c.In(2).DType, c.In(2).Shape)],
        NoGradReason = "the backward of SlotLora (no second derivatives are taken)",
    };

    /// <summary>
    /// (N, K, out): <paramref name="scale"/> · B_e A_e x for each slot's expert e = <paramref name="experts"/>[n, j]
    /// (int64 (N, K)), with <paramref name="a"/> (E·R, in) and <paramref name="bw"/> (out, E·R) stacked over experts.
    /// </summary>
    public static Value SlotLora(this Builder b, Value x, Value a, Value bw, Value experts, int rank, double scale)
    {
        if (x.DType != a.DType || x.DType != bw.DType || experts.DType != DType.Int64 || experts.Rank != 2 || a.Rank != 2 || bw.Rank != 2 || x.Rank is not (2 or 3))
            throw Fail.Bug($"SlotLora takes X (N, in) or (N, K, in), A (E·R, in), B (out, E·R) in one dtype and int64 experts (N, K); got {x}, {a}, {bw}, {experts}");
        if (rank < 1 || (a.S[0].Value % rank) != 0 || a.S[0].Value != bw.S[1].Value || a.S[1].Value != x.S[-1].Value)
            throw Fail.Bug($"SlotLora rank {rank} does not fit A {a} and B {bw} for X {x}");
        return b.Apply(SlotLoraOp, [x, a, bw, experts], A.Of(("rank", (long)rank), ("scale", scale)))[0];
    }

    private static Value?[] Backward(GradContext g)
    {
        var attrs = A.Of(("rank", g.Node.Int("rank", 1)), ("scale", (double)g.Node.Float("scale", 1)));
        var r = g.B.Apply(SlotLoraGradOp, [g.X(0), g.X(1), g.X(2), g.X(3), g.Dy], attrs);
        return [r[0], r[1], r[2], null];
    }
}
