using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>Softmax and LogSoftmax along one axis.</summary>
public static class SoftmaxOps
{
    public static readonly OpDef SoftmaxOp = new("Softmax")
    {
        Infer = c => c.Same(),
        // dx = y ⊙ (dy − Σ dy ⊙ y). Over the last axis of a static shape it is taken on (rows, S) views, so the
        // (rows, 1) broadcast hits ORT's per-row kernel (the 5-D attention broadcast ran at a third of bandwidth).
        Grad = g =>
        {
            var b = g.B;
            var axis = g.Node.Int("axis", -1);
            var (y, dy) = (g.Y(), g.Dy);
            var rows = y.Shape is { } sh && sh.Rank > 2 && (axis == -1 || axis == sh.Rank - 1) && sh.Dims.All(d => d.IsStatic);
            if (rows) (y, dy, axis) = (b.Reshape(y, -1, y.S[-1].Value), b.Reshape(dy, -1, y.S[-1].Value), -1);   // (rows, S)
            var dot = b.ReduceSum(b.Mul(dy, y), [axis], keepDims: true);
            var dx = b.Mul(y, b.Sub(dy, dot));
            return [rows ? b.Reshape(dx, g.Y().S.ToLongs()) : dx];
        },
        Cases = [
            GradCase.Of("last", (b, x) => b.Softmax(x[0]), Spec.F(3, 5)),
            GradCase.Of("axis1", (b, x) => b.Softmax(x[0], 1), Spec.F(2, 4, 3)),
            GradCase.Of("last-3d", (b, x) => b.Softmax(x[0]), Spec.F(2, 3, 5)),
        ],
    };

    public static readonly OpDef LogSoftmaxOp = new("LogSoftmax")
    {
        Infer = c => c.Same(),
        // dx = dy − softmax ⊙ Σ dy
        Grad = g =>
        {
            var b = g.B;
            var axis = g.Node.Int("axis", -1);
            var sum = b.ReduceSum(g.Dy, [axis], keepDims: true);
            return [b.Sub(g.Dy, b.Mul(b.Exp(g.Y()), sum))];
        },
        Cases = [
            GradCase.Of("last", (b, x) => b.LogSoftmax(x[0]), Spec.F(3, 5)),
            GradCase.Of("axis0", (b, x) => b.LogSoftmax(x[0], 0), Spec.F(4, 3)),
        ],
    };

    public static Value Softmax(this Builder b, Value x, long axis = -1) => b.Apply1(SoftmaxOp, [x], A.Of(("axis", axis)));
    public static Value LogSoftmax(this Builder b, Value x, long axis = -1) => b.Apply1(LogSoftmaxOp, [x], A.Of(("axis", axis)));
}
