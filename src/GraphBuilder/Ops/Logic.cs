using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>Comparisons and selection: Equal, Less, Greater, Not, And, Where, Min, Max.</summary>
public static class LogicOps
{
    private static OutSpec[] Compare(InferContext c) => InferContext.Of(DType.Bool, Broadcasting.Infer(c.In(0).Shape, c.In(1).Shape));

    public static readonly OpDef EqualOp = new("Equal") { Infer = Compare, NoGradReason = "boolean output" };
    public static readonly OpDef LessOp = new("Less") { Infer = Compare, NoGradReason = "boolean output" };
    public static readonly OpDef GreaterOp = new("Greater") { Infer = Compare, NoGradReason = "boolean output" };
    public static readonly OpDef LessOrEqualOp = new("LessOrEqual") { Infer = Compare, NoGradReason = "boolean output" };
    public static readonly OpDef AndOp = new("And") { Infer = Compare, NoGradReason = "boolean output" };
    public static readonly OpDef OrOp = new("Or") { Infer = Compare, NoGradReason = "boolean output" };
    public static readonly OpDef NotOp = new("Not") { Infer = c => c.Same(), NoGradReason = "boolean output" };

    public static readonly OpDef WhereOp = new("Where")
    {
        Infer = c => InferContext.Of(c.In(1).DType, Broadcasting.Infer(c.In(0).Shape, c.In(1).Shape, c.In(2).Shape)),
        // the gradient flows to the branch that was selected
        Grad = g =>
        {
            var b = g.B;
            var zero = b.Scalar(0, g.Dy.DType);
            return [
                null,
                g.Wants(1) ? b.SumTo(b.Where(g.X(0), g.Dy, zero), g.X(1)) : null,
                g.Wants(2) ? b.SumTo(b.Where(g.X(0), zero, g.Dy), g.X(2)) : null];
        },
        Cases = [
            GradCase.Of("same", (b, x) => b.Where(x[0], x[1], x[2]), Spec.Mask(3, 4), Spec.F(3, 4), Spec.F(3, 4)),
            GradCase.Of("broadcast", (b, x) => b.Where(x[0], x[1], x[2]), Spec.Mask(2, 3, 4), Spec.F(3, 1), Spec.F(4)),
        ],
    };

    public static readonly OpDef MaxOp = new("Max")
    {
        Infer = c => InferContext.Of(c.In(0).DType, Broadcasting.Infer(c.In(0).Shape, c.In(1).Shape)),
        Grad = g => MinMaxGrad(g, isMax: true),
        Cases = [GradCase.Of("broadcast", (b, x) => b.Max(x[0], x[1]), Spec.Distinct(2, 3), Spec.F(3))],
    };

    public static readonly OpDef MinOp = new("Min")
    {
        Infer = c => InferContext.Of(c.In(0).DType, Broadcasting.Infer(c.In(0).Shape, c.In(1).Shape)),
        Grad = g => MinMaxGrad(g, isMax: false),
        Cases = [GradCase.Of("broadcast", (b, x) => b.Min(x[0], x[1]), Spec.Distinct(2, 3), Spec.F(3))],
    };

    // ties go to the first argument (measure zero for continuous inputs)
    private static Value?[] MinMaxGrad(GradContext g, bool isMax)
    {
        var b = g.B;
        var first = isMax ? b.Apply1(GreaterOrEqualOp, [g.X(0), g.X(1)]) : b.Apply1(LessOrEqualOp, [g.X(0), g.X(1)]);
        var zero = b.Scalar(0, g.Dy.DType);
        return [
            g.Wants(0) ? b.SumTo(b.Where(first, g.Dy, zero), g.X(0)) : null,
            g.Wants(1) ? b.SumTo(b.Where(first, zero, g.Dy), g.X(1)) : null];
    }

    public static readonly OpDef GreaterOrEqualOp = new("GreaterOrEqual") { Infer = Compare, NoGradReason = "boolean output" };

    public static Value Equal(this Builder b, Value x, Value y) => b.Apply1(EqualOp, [x, y]);
    public static Value Less(this Builder b, Value x, Value y) => b.Apply1(LessOp, [x, y]);
    public static Value Greater(this Builder b, Value x, Value y) => b.Apply1(GreaterOp, [x, y]);
    public static Value LessOrEqual(this Builder b, Value x, Value y) => b.Apply1(LessOrEqualOp, [x, y]);
    public static Value And(this Builder b, Value x, Value y) => b.Apply1(AndOp, [x, y]);
    public static Value Or(this Builder b, Value x, Value y) => b.Apply1(OrOp, [x, y]);
    public static Value Not(this Builder b, Value x) => b.Apply1(NotOp, [x]);
    public static Value Where(this Builder b, Value cond, Value x, Value y) => b.Apply1(WhereOp, [cond, x, y]);
    public static Value Max(this Builder b, Value x, Value y) => b.Apply1(MaxOp, [x, y]);
    public static Value Min(this Builder b, Value x, Value y) => b.Apply1(MinOp, [x, y]);
}
