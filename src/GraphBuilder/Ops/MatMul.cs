using System.Collections.Immutable;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>Batched, broadcasting matrix product.</summary>
public static class MatMulOps
{
    public static readonly OpDef MatMulOp = new("MatMul")
    {
        Infer = c => InferContext.Of(c.In(0).DType, InferShape(c.In(0).Shape, c.In(1).Shape)),
        // dA = dY Bᵀ, dB = Aᵀ dY, each summed back over broadcast batch axes
        Grad = g =>
        {
            var b = g.B;
            if (g.X(0).Rank < 2 || g.X(1).Rank < 2) throw Fail.Bug($"MatMul gradient needs rank ≥ 2 operands ({g.Node.Name})");
            return [
                g.Wants(0) ? b.SumTo(b.MatMul(g.Dy, b.SwapLast(g.X(1))), g.X(0)) : null,
                g.Wants(1) ? b.SumTo(b.MatMul(b.SwapLast(g.X(0)), g.Dy), g.X(1)) : null];
        },
        Cases = [
            GradCase.Of("2d", (b, x) => b.MatMul(x[0], x[1]), Spec.F(3, 4), Spec.F(4, 5)),
            GradCase.Of("batched", (b, x) => b.MatMul(x[0], x[1]), Spec.F(2, 3, 4), Spec.F(2, 4, 2)),
            GradCase.Of("broadcast-weight", (b, x) => b.MatMul(x[0], x[1]), Spec.F(2, 3, 4), Spec.F(4, 3)),
            GradCase.Of("broadcast-batch", (b, x) => b.MatMul(x[0], x[1]), Spec.F(2, 1, 3, 4), Spec.F(3, 4, 2)),
        ],
    };

    private static Shape? InferShape(Shape? a, Shape? w)
    {
        if (a is null || w is null) return null;
        if (a.Rank < 1 || w.Rank < 1) throw Fail.Bug("MatMul of a scalar");
        if (w.Rank == 1) return new Shape(a.Dims.RemoveAt(a.Rank - 1));
        if (a.Rank == 1) return new Shape(w.Dims.RemoveAt(w.Rank - 2));
        var batch = Broadcasting.Infer(new Shape(a.Dims[..^2]), new Shape(w.Dims[..^2]))!;
        return new Shape(batch.Dims.Add(a[-2]).Add(w[-1]));
    }

    public static Value MatMul(this Builder b, Value x, Value w) => b.Apply1(MatMulOp, [x, w]);

    /// <summary>Transposes the last two axes.</summary>
    public static Value SwapLast(this Builder b, Value x)
    {
        var r = x.Rank;
        var perm = Enumerable.Range(0, r).Select(i => (long)i).ToArray();
        (perm[r - 1], perm[r - 2]) = (perm[r - 2], perm[r - 1]);
        return b.Transpose(x, perm);
    }
}

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
