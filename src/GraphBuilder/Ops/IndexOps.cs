using System.Collections.Immutable;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>Gather, GatherElements, ScatterElements, TopK, Range: indexing (indices carry no gradient).</summary>
public static class IndexOps
{
    public static readonly OpDef ScatterElementsOp = new("ScatterElements")
    {
        Infer = c => c.Same(),
        // reduction "none": scattered positions take the update (data gets no gradient there);
        // reduction "add": data passes through, every update gets the gradient at its target
        Grad = g =>
        {
            var b = g.B;
            var axis = g.Node.Int("axis", 0);
            var add = g.Node.Str("reduction") == "add";
            Value? dData = null;
            if (g.Wants(0))
            {
                dData = add ? g.Dy : b.Apply1(ScatterElementsOp!, [g.Dy, g.X(1), b.ZerosLike(g.X(2))], A.Of(("axis", axis)));
            }
            var dUpd = g.Wants(2) ? b.GatherElements(g.Dy, g.X(1), axis) : null;
            return [dData, null, dUpd];
        },
        Cases = [
            GradCase.Of("none", (b, x) => b.Apply1(ScatterElementsOp!, [x[0], x[1], x[2]], A.Of(("axis", 1))), Spec.F(2, 4), Spec.Ints([3, 0, 1, 2], 2, 2), Spec.F(2, 2)),
            GradCase.Of("add", (b, x) => b.Apply1(ScatterElementsOp!, [x[0], x[1], x[2]], A.Of(("axis", 0), ("reduction", "add"))), Spec.F(3, 2), Spec.Ints([1, 1, 1, 2], 2, 2), Spec.F(2, 2)),
        ],
    };

    public static readonly OpDef GatherOp = new("Gather")
    {
        Infer = c =>
        {
            var (x, i) = (c.In(0).Shape, c.In(1).Shape);
            var axis = (int)c.Node.Int("axis", 0);
            if (x is null || i is null) return InferContext.Of(c.In(0).DType, null);
            var ax = axis < 0 ? axis + x.Rank : axis;
            return InferContext.Of(c.In(0).DType, new Shape(x.Dims[..ax].AddRange(i.Dims).AddRange(x.Dims[(ax + 1)..])));
        },
        // scatter-add the rows back: dX[idx[m]] += dY[m] (axis 0; embeddings and row lookups)
        Grad = g =>
        {
            var b = g.B;
            if (g.Node.Int("axis", 0) != 0) throw Fail.Bug($"Gather gradient is defined for axis 0 ({g.Node.Name})");
            var xs = g.X(0).S;
            var rest = xs.Dims[1..].Aggregate(1L, (a, d) => d.IsStatic ? a * d.Value : throw Fail.Bug("Gather gradient needs static row shape"));
            var dy = b.Reshape(g.Dy, -1, rest);                       // (M, R)
            var idx = b.ExpandTo(b.Reshape(g.X(1), -1, 1), dy);        // (M, R)
            var zeros = b.Reshape(b.ZerosLike(g.X(0)), -1, rest);      // (N, R)
            var dx = b.Apply1(ScatterElementsOp, [zeros, idx, dy], A.Of(("axis", 0), ("reduction", "add")));
            return [b.ReshapeLike(dx, g.X(0)), null];
        },
        Cases = [
            GradCase.Of("rows", (b, x) => b.Gather(x[0], x[1]), Spec.F(5, 3), Spec.Ints([0, 2, 2, 4, 0, 1], 2, 3)),
            GradCase.Of("vector", (b, x) => b.Gather(x[0], x[1]), Spec.F(6), Spec.Ints([5, 1, 1], 3)),
        ],
    };

    public static readonly OpDef GatherElementsOp = new("GatherElements")
    {
        Infer = c => InferContext.Of(c.In(0).DType, c.In(1).Shape),
        Grad = g =>
        {
            var b = g.B;
            var axis = g.Node.Int("axis", 0);
            return [b.ScatterElements(b.ZerosLike(g.X(0)), g.X(1), g.Dy, axis, "add"), null];
        },
        Cases = [GradCase.Of("axis1-repeats", (b, x) => b.GatherElements(x[0], x[1], 1), Spec.F(3, 4), Spec.Ints([0, 0, 3, 1, 2, 1], 3, 2))],
    };

    public static readonly OpDef TopKOp = new("TopK")
    {
        Outputs = 2,
        Infer = c =>
        {
            var s = c.In(0).Shape;
            var k = c.Const(1)?.AsLongs()[0];
            var axis = (int)c.Node.Int("axis", -1);
            var outShape = s is null ? null : s.With(axis, k is { } kk ? Dim.Of(kk) : Dim.Unknown);
            return [new(c.In(0).DType, outShape), new(DType.Int64, outShape)];
        },
        // values are differentiable (scatter back to the chosen positions), indices are not
        Grad = g =>
        {
            var b = g.B;
            if (g.OutGrads[0] is not { } dv) return [null, null];
            return [b.ScatterElements(b.ZerosLike(g.X(0)), g.Y(1), dv, g.Node.Int("axis", -1)), null];
        },
        Cases = [
            GradCase.Of("last", (b, x) => b.TopK(x[0], 2).Values, Spec.Distinct(3, 5)),
            GradCase.Of("axis0", (b, x) => b.TopK(x[0], 2, axis: 0).Values, Spec.Distinct(4, 3)),
        ],
    };

    public static readonly OpDef RangeOp = new("Range")
    {
        Infer = c => InferContext.Of(c.In(0).DType, Shape.Of(Dim.Unknown)),
        NoGradReason = "index generation",
    };

    public static Value Gather(this Builder b, Value x, Value indices, long axis = 0) => b.Apply1(GatherOp, [x, indices], A.Of(("axis", axis)));
    public static Value GatherElements(this Builder b, Value x, Value indices, long axis) => b.Apply1(GatherElementsOp, [x, indices], A.Of(("axis", axis)));

    public static Value ScatterElements(this Builder b, Value data, Value indices, Value updates, long axis, string reduction = "none") =>
        b.Apply1(ScatterElementsOp, [data, indices, updates], reduction == "none" ? A.Of(("axis", axis)) : A.Of(("axis", axis), ("reduction", reduction)));

    public static (Value Values, Value Indices) TopK(this Builder b, Value x, long k, long axis = -1, bool largest = true)
    {
        var r = b.Apply(TopKOp, [x, b.Ints(k)], A.Of(("axis", axis), ("largest", largest ? 1 : 0), ("sorted", 1)));
        return (r[0], r[1]);
    }

    public static Value Range(this Builder b, Value start, Value limit, Value delta) => b.Apply1(RangeOp, [start, limit, delta]);
}

/// <summary>Trilu (triangular masks) and Dropout (training mode as an input, mask reused by the gradient).</summary>
public static class MaskOps
{
    public static readonly OpDef TriluOp = new("Trilu")
    {
        Infer = c => c.Same(),
        Grad = g => [g.B.Apply1(TriluOp!, g.Inputs.Count > 1 ? [g.Dy, g.Inputs[1]] : [g.Dy], A.Of(("upper", g.Node.Int("upper", 1)))), null],
        Cases = [
            GradCase.Of("lower", (b, x) => b.Trilu(x[0], upper: false), Spec.F(2, 3, 3)),
            GradCase.Of("upper-k1", (b, x) => b.Trilu(x[0], upper: true, k: 1), Spec.F(3, 4)),
        ],
    };

    public static readonly OpDef DropoutOp = new("Dropout")
    {
        Outputs = 2,
        Infer = c => [new(c.In(0).DType, c.In(0).Shape), new(DType.Bool, c.In(0).Shape)],
        // dx = dy ⊙ mask / (1 − ratio) in training mode; identity otherwise
        Grad = g =>
        {
            var b = g.B;
            var ratio = b.ConstantOf(g.X(1))?.AsDoubles()[0] ?? throw Fail.Bug("Dropout gradient needs a constant ratio");
            var t = g.Dy.DType;
            var mode = b.ConstantOf(g.X(2))?.AsDoubles()[0];                                 // training mode when fixed at build time
            if (mode == 0) return [g.Dy, null, null];
            var scale = mode is null ? b.Where(g.X(2), b.Scalar(1.0 / (1.0 - ratio), t), b.Scalar(1, t)) : b.Scalar(1.0 / (1.0 - ratio), t);
            return [b.Where(g.Y(1), b.Mul(g.Dy, scale), b.Scalar(0, t)), null, null];
        },
        Cases = [
            GradCase.Of("train-seeded", (b, x) => b.Dropout(x[0], 0.5, b.Const(ConstantOps.FloatData([1], DType.Bool, [])), seed: 7), Spec.F(4, 5)),
            GradCase.Of("eval", (b, x) => b.Dropout(x[0], 0.3, b.Const(ConstantOps.FloatData([0], DType.Bool, []))), Spec.F(3, 4)),
            GradCase.Of("mode-input", (b, x) => b.Dropout(x[0], 0.5, x[1], seed: 7), Spec.F(4, 5), Spec.Mask()),
        ],
    };

    public static Value Trilu(this Builder b, Value x, bool upper, long k = 0) =>
        b.Apply1(TriluOp, k == 0 ? [x] : [x, b.Int(k)], A.Of(("upper", upper ? 1 : 0)));

    /// <summary>Dropout with ratio fixed at build time and training mode a bool tensor (scalar).</summary>
    public static Value Dropout(this Builder b, Value x, double ratio, Value training, long? seed = null)
    {
        var attrs = seed is { } s ? A.Of(("seed", s)) : [];
        return b.Apply(DropoutOp, [x, b.Scalar(ratio, DType.Float32), training], attrs)[0];   // ratio in fp32 whatever x's dtype
    }
}
