using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>
/// Softmax cross-entropy per row as one kernel each way (domain <c>com.mixlora</c>, the trainer's own kernels):
/// <code>
///   lse[n] = log Σ_v exp(x[n,v])        nll[n] = lse[n] − x[n, t[n]]   (0 where t[n] is outside [0, V))
///   backward: dx[n,v] = (exp(x[n,v] − lse[n]) − [v = t[n]]) · dnll[n]   (0 for ignored rows)
/// </code>
/// in float32 from logits of any float dtype: no (N, V) float32 copy, log-softmax or one-hot is materialised.
/// </summary>
public static class CrossEntropyOps
{
    public static readonly OpDef SoftmaxCrossEntropyOp = new("SoftmaxCrossEntropy", FusedDomain.Name)
    {
        Outputs = 2,
        Infer = c =>
        {
            var rows = c.In(0).Shape is { } s ? Shape.Of(s[0]) : null;
            return [new(DType.Float32, rows), new(DType.Float32, rows)];
        },
        Grad = Backward,
        // float32 logits (the kernels' input); targets include an ignored row (−100) and repeated classes
        Cases = [
            GradCase.Float32("rows", (b, x) => b.SoftmaxCrossEntropy(x[0], x[1]).Nll, Spec.F(4, 7), Spec.Ints([3, -100, 0, 6], 4)),
            GradCase.Float32("scaled", (b, x) => b.Mul(b.SoftmaxCrossEntropy(b.Scale(x[0], 4), x[1]).Nll, x[2]), Spec.F(3, 5), Spec.Ints([1, 1, 4], 3), Spec.F(3)),
        ],
    };

    public static readonly OpDef SoftmaxCrossEntropyGradOp = new("SoftmaxCrossEntropyGrad", FusedDomain.Name)
    {
        Infer = c => c.Same(0),
        NoGradReason = "the backward of SoftmaxCrossEntropy (no second derivatives are taken)",
    };

    /// <summary>(nll (N) float32, lse (N) float32) for logits (N, V) and int64 targets (N).</summary>
    public static (Value Nll, Value Lse) SoftmaxCrossEntropy(this Builder b, Value logits, Value targets)
    {
        if (logits.Rank != 2 || targets.Rank != 1 || targets.DType != DType.Int64) throw Fail.Bug($"SoftmaxCrossEntropy takes logits (N, V) and int64 targets (N); got {logits}, {targets}");
        var r = b.Apply(SoftmaxCrossEntropyOp, [logits, targets]);
        return (r[0], r[1]);
    }

    private static Value?[] Backward(GradContext g)
    {
        if (g.OutGrads[1] is not null) throw Fail.Bug($"SoftmaxCrossEntropy '{g.Node.Name}': lse is not differentiable here");
        var dx = g.B.Apply(SoftmaxCrossEntropyGradOp, [g.X(0), g.X(1), g.Y(1), g.Dy])[0];
        return [dx, null];
    }
}
