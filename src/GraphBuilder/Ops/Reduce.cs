using System.Collections.Immutable;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>ReduceSum, ReduceMean, ReduceMax (axes as an input, opset 18) and Size.</summary>
public static class ReduceOps
{
    private static OutSpec[] Infer(InferContext c)
    {
        var x = c.In(0);
        var keep = c.Node.Int("keepdims", 1) != 0;
        if (x.Shape is null) return InferContext.Of(x.DType, null);
        var axes = c.Const(1)?.AsLongs() ?? (c.Has(1) ? null : Enumerable.Range(0, x.Rank).Select(i => (long)i).ToArray());
        if (axes is null) return InferContext.Of(x.DType, null);
        var norm = axes.Select(a => a < 0 ? a + x.Rank : a).ToHashSet();
        var dims = new List<Dim>();
        for (var i = 0; i < x.Rank; i++)
        {
            if (!norm.Contains(i)) dims.Add(x.Shape[i]);
            else if (keep) dims.Add(1);
        }
        return InferContext.Of(x.DType, new Shape(dims.ToImmutableArray()));
    }

    private static long[] Axes(GradContext g) =>
        (g.B.ConstantOf(g.Inputs.Count > 1 ? g.Inputs[1] : null)?.AsLongs() ?? Enumerable.Range(0, g.X(0).Rank).Select(i => (long)i).ToArray())
        .Select(a => a < 0 ? a + g.X(0).Rank : a).ToArray();

    /// <summary>The output gradient brought back to the input's shape (unsqueezed and expanded).</summary>
    private static Value Spread(GradContext g, Value dy)
    {
        var b = g.B;
        if (g.Node.Int("keepdims", 1) == 0) dy = b.Unsqueeze(dy, Axes(g));
        return b.ExpandTo(dy, g.X(0));
    }

    public static readonly OpDef ReduceSumOp = new("ReduceSum")
    {
        Infer = Infer,
        Grad = g => [Spread(g, g.Dy), null],
        Cases = [
            GradCase.Of("axis1-keep", (b, x) => b.ReduceSum(x[0], [1], keepDims: true), Spec.F(2, 3, 4)),
            GradCase.Of("axes02-drop", (b, x) => b.ReduceSum(x[0], [0, -1], keepDims: false), Spec.F(2, 3, 4)),
            GradCase.Of("all", (b, x) => b.ReduceSum(x[0]), Spec.F(3, 4)),
        ],
    };

    public static readonly OpDef ReduceMeanOp = new("ReduceMean")
    {
        Infer = Infer,
        Grad = g =>
        {
            var b = g.B;
            var spread = Spread(g, g.Dy);
            // 1/count as a constant when shapes are static (two nodes fewer); Size otherwise
            var count = g.Y().Shape is { IsStatic: true } ys && g.X(0).Shape is { IsStatic: true } xs
                ? b.Scalar((double)ys.Count / xs.Count, g.Dy.DType)
                : b.Div(b.Cast(b.Size(g.Y()), g.Dy.DType), b.Cast(b.Size(g.X(0)), g.Dy.DType));
            return [b.Mul(spread, count), null];
        },
        Cases = [
            GradCase.Of("axis-last", (b, x) => b.ReduceMean(x[0], [-1], keepDims: true), Spec.F(2, 3, 4)),
            GradCase.Of("axis0-drop", (b, x) => b.ReduceMean(x[0], [0], keepDims: false), Spec.F(3, 4)),
        ],
    };

    public static readonly OpDef ReduceMaxOp = new("ReduceMax")
    {
        Infer = Infer,
        // the gradient goes to the maxima, split evenly between ties
        Grad = g =>
        {
            var b = g.B;
            var yFull = Spread(g, g.Y());
            var mask = b.Cast(b.Equal(g.X(0), yFull), g.Dy.DType);
            var axes = Axes(g);
            var count = b.ExpandTo(b.ReduceSum(mask, axes, keepDims: true), g.X(0));
            return [b.Div(b.Mul(mask, Spread(g, g.Dy)), count), null];
        },
        Cases = [
            GradCase.Of("axis-last", (b, x) => b.ReduceMax(x[0], [-1], keepDims: true), Spec.Distinct(2, 3, 4)),
            GradCase.Of("axis0-drop", (b, x) => b.ReduceMax(x[0], [0], keepDims: false), Spec.Distinct(3, 4)),
        ],
    };

    public static readonly OpDef SizeOp = new("Size")
    {
        Infer = c => InferContext.Of(DType.Int64, Shape.Scalar),
        NoGradReason = "an element count",
    };

    public static Value ReduceSum(this Builder b, Value x, long[]? axes = null, bool keepDims = false) =>
        b.Apply1(ReduceSumOp, axes is null ? [x] : [x, b.Ints(axes)], A.Of(("keepdims", keepDims ? 1 : 0)));

    public static Value ReduceMean(this Builder b, Value x, long[]? axes = null, bool keepDims = false) =>
        b.Apply1(ReduceMeanOp, axes is null ? [x] : [x, b.Ints(axes)], A.Of(("keepdims", keepDims ? 1 : 0)));

    public static Value ReduceMax(this Builder b, Value x, long[]? axes = null, bool keepDims = false) =>
        b.Apply1(ReduceMaxOp, axes is null ? [x] : [x, b.Ints(axes)], A.Of(("keepdims", keepDims ? 1 : 0)));

    public static Value Size(this Builder b, Value x) => b.Apply1(SizeOp, [x]);
}
