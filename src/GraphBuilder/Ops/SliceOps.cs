using System.Collections.Immutable;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>Concat, Split, Slice and Pad: pieces of tensors and their adjoints.</summary>
public static class SliceOps
{
    public static readonly OpDef ConcatOp = new("Concat")
    {
        Infer = c =>
        {
            var axis = (int)c.Node.Int("axis");
            var first = c.In(0).Shape;
            if (c.Inputs.Any(v => v?.Shape is null) || first is null) return InferContext.Of(c.In(0).DType, null);
            var ax = axis < 0 ? axis + first.Rank : axis;
            var dims = c.Inputs.Select(v => v!.Shape![ax]).ToArray();
            Dim total = dims.All(d => d.IsStatic) ? dims.Sum(d => d.Value) : Dim.Unknown;
            return InferContext.Of(c.In(0).DType, first.With(ax, total));
        },
        // split the gradient back into the pieces' extents along the axis
        Grad = g =>
        {
            var axis = (int)g.Node.Int("axis");
            var sizes = g.Inputs.Select(v => v!.S[axis]).ToArray();
            if (sizes.Any(d => !d.IsStatic)) throw Fail.Bug($"Concat gradient needs static sizes along axis {axis} ({g.Node.Name})");
            return g.B.Split(g.Dy, axis, sizes.Select(d => d.Value).ToArray());
        },
        Cases = [GradCase.Of("axis1", (b, x) => b.Concat(1, x[0], x[1]), Spec.F(2, 3), Spec.F(2, 2))],
    };

    public static readonly OpDef SplitOp = new("Split")
    {
        Outputs = 1,
        Infer = c =>
        {
            var axis = (int)c.Node.Int("axis", 0);
            var sizes = c.Const(1)?.AsLongs() ?? throw Fail.Bug("Split needs constant sizes");
            var s = c.In(0).Shape;
            return sizes.Select(n => new OutSpec(c.In(0).DType, s?.With(axis, n))).ToArray();
        },
        // concatenate the pieces' gradients, zeros where a piece got none
        Grad = g =>
        {
            var b = g.B;
            var parts = g.Outputs.Select((y, i) => g.OutGrads[i] ?? b.ZerosLike(y)).ToArray();
            return [b.Concat((int)g.Node.Int("axis", 0), parts), null];
        },
        Cases = [GradCase.Of("three", (b, x) => { var p = b.Split(x[0], -1, 1, 2, 1); return b.Add(b.Mul(p[0], p[2]), b.ReduceSum(p[1], [-1], true)); }, Spec.F(2, 4))],
    };

    public static readonly OpDef SliceOp = new("Slice")
    {
        Infer = c =>
        {
            var s = c.In(0).Shape;
            var (starts, ends, axes) = (c.Const(1)?.AsLongs(), c.Const(2)?.AsLongs(), c.Const(3)?.AsLongs());
            if (s is null || starts is null || ends is null) return InferContext.Of(c.In(0).DType, null);
            axes ??= Enumerable.Range(0, starts.Length).Select(i => (long)i).ToArray();
            var shape = s;
            for (var i = 0; i < axes.Length; i++)
            {
                var ax = (int)(axes[i] < 0 ? axes[i] + s.Rank : axes[i]);
                var d = s[ax];
                if (!d.IsStatic) { shape = shape.With(ax, Dim.Unknown); continue; }
                long Clamp(long v) => Math.Clamp(v < 0 ? v + d.Value : v, 0, d.Value);
                shape = shape.With(ax, Math.Max(0, Clamp(ends[i]) - Clamp(starts[i])));
            }
            return InferContext.Of(c.In(0).DType, shape);
        },
        // pad the gradient back with zeros (unit steps, static shapes)
        Grad = g =>
        {
            var b = g.B;
            var s = g.X(0).S;
            var starts = b.ConstantOf(g.X(1))!.AsLongs();
            var ends = b.ConstantOf(g.X(2))!.AsLongs();
            var axes = g.Inputs.Count > 3 && g.Inputs[3] != null ? b.ConstantOf(g.Inputs[3])!.AsLongs() : Enumerable.Range(0, starts.Length).Select(i => (long)i).ToArray();
            if (g.Inputs.Count > 4 && g.Inputs[4] != null && b.ConstantOf(g.Inputs[4])!.AsLongs().Any(st => st != 1)) throw Fail.Bug("Slice gradient supports unit steps only");
            var pads = new long[2 * s.Rank];
            for (var i = 0; i < axes.Length; i++)
            {
                var ax = (int)(axes[i] < 0 ? axes[i] + s.Rank : axes[i]);
                var n = s[ax].IsStatic ? s[ax].Value : throw Fail.Bug($"Slice gradient needs a static size on axis {ax}");
                long Clamp(long v) => Math.Clamp(v < 0 ? v + n : v, 0, n);
                pads[ax] = Clamp(starts[i]);
                pads[ax + s.Rank] = n - Clamp(ends[i]);
            }
            return [b.Pad(g.Dy, pads), null, null, null, null];
        },
        Cases = [
            GradCase.Of("axis1", (b, x) => b.Slice(x[0], b.Ints(1), b.Ints(3), b.Ints(1)), Spec.F(2, 4)),
            GradCase.Of("negative", (b, x) => b.Slice(x[0], b.Ints(0, -2), b.Ints(1, long.MaxValue), b.Ints(0, 2)), Spec.F(3, 2, 4)),
            GradCase.Of("static-split", (b, x) => b.Slice(x[0], [1, 0], [3, 2], [1, 2]), Spec.F(2, 4, 3)),
        ],
    };

    public static readonly OpDef PadOp = new("Pad")
    {
        Infer = c =>
        {
            var s = c.In(0).Shape;
            var pads = c.Const(1)?.AsLongs();
            if (s is null || pads is null) return InferContext.Of(c.In(0).DType, null);
            var dims = s.Dims.Select((d, i) => d.IsStatic ? Dim.Of(d.Value + pads[i] + pads[i + s.Rank]) : Dim.Unknown);
            return InferContext.Of(c.In(0).DType, new Shape(dims.ToImmutableArray()));
        },
        // constant-mode pad: the gradient is the un-padded window
        Grad = g =>
        {
            var s = g.X(0).S;
            var pads = g.B.ConstantOf(g.X(1))!.AsLongs();
            var axes = Enumerable.Range(0, s.Rank).Select(i => (long)i).ToArray();
            var starts = axes.Select(i => pads[i]).ToArray();
            var ends = axes.Select(i => pads[i] + s[(int)i].Value).ToArray();
            return [g.B.Slice(g.Dy, starts, ends, axes), null, null];
        },
        Cases = [GradCase.Of("both-sides", (b, x) => b.Pad(x[0], [1, 0, 0, 2]), Spec.F(2, 3))],
    };

    public static Value Concat(this Builder b, int axis, params Value[] xs) => xs.Length == 1 ? xs[0] : b.Apply1(ConcatOp, xs, A.Of(("axis", axis)));

    public static Value[] Split(this Builder b, Value x, int axis, params long[] sizes) =>
        b.Apply(SplitOp, [x, b.Ints(sizes)], A.Of(("axis", axis)), outputs: sizes.Length);

    /// <summary>Static-bound, unit-step slice.</summary>
    public static Value Slice(this Builder b, Value x, long[] starts, long[] ends, long[] axes) =>
        b.Apply1(SliceOp, [x, b.Ints(starts), b.Ints(ends), b.Ints(axes)]);

    /// <summary>Slice with run-time bounds (starts/ends are int64 tensors).</summary>
    public static Value Slice(this Builder b, Value x, Value starts, Value ends, Value axes) => b.Apply1(SliceOp, [x, starts, ends, axes]);

    public static Value Pad(this Builder b, Value x, long[] pads) => b.Apply1(PadOp, [x, b.Ints(pads)]);
}
