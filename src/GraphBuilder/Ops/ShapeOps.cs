using System.Collections.Immutable;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>Identity, Reshape, Transpose, Squeeze, Unsqueeze, Expand: data movement without arithmetic.</summary>
public static class ShapeOps
{
    public static readonly OpDef Identity = new("Identity")
    {
        Infer = c => c.Same(),
        Grad = g => [g.Dy],
        Cases = [GradCase.Of("basic", (b, x) => b.Apply1(Identity!, [x[0]]), Spec.F(2, 3))],
    };

    public static readonly OpDef ReshapeOp = new("Reshape")
    {
        Infer = c => InferContext.Of(c.In(0).DType, InferReshape(c.In(0).Shape, c.Const(1)?.AsLongs())),
        Grad = g => [g.B.ReshapeLike(g.Dy, g.X(0)), null],
        Cases = [
            GradCase.Of("merge", (b, x) => b.Reshape(x[0], 6, 4), Spec.F(2, 3, 4)),
            GradCase.Of("infer-dim", (b, x) => b.Reshape(x[0], 0, -1, 2), Spec.F(3, 4)),
        ],
    };

    public static readonly OpDef TransposeOp = new("Transpose")
    {
        Infer = c =>
        {
            var s = c.In(0).Shape;
            var perm = c.Node.Ints("perm") ?? Enumerable.Range(0, s?.Rank ?? 0).Reverse().Select(i => (long)i).ToImmutableArray();
            return InferContext.Of(c.In(0).DType, s is null ? null : new Shape(perm.Select(p => s[(int)p]).ToImmutableArray()));
        },
        Grad = g =>
        {
            var perm = g.Node.Ints("perm")!.Value;
            var inv = new long[perm.Length];
            for (var i = 0; i < perm.Length; i++) inv[perm[i]] = i;
            return [g.B.Transpose(g.Dy, inv)];
        },
        Cases = [GradCase.Of("3d", (b, x) => b.Transpose(x[0], 1, 2, 0), Spec.F(2, 3, 4))],
    };

    public static readonly OpDef SqueezeOp = new("Squeeze")
    {
        Infer = c =>
        {
            var s = c.In(0).Shape;
            var axes = c.Const(1)?.AsLongs();
            if (s is null || axes is null) return InferContext.Of(c.In(0).DType, null);
            var set = axes.Select(a => a < 0 ? a + s.Rank : a).ToHashSet();
            return InferContext.Of(c.In(0).DType, new Shape(s.Dims.Where((_, i) => !set.Contains(i)).ToImmutableArray()));
        },
        Grad = g => [g.B.Unsqueeze(g.Dy, g.B.ConstantOf(g.X(1))!.AsLongs()), null],
        Cases = [GradCase.Of("middle", (b, x) => b.Squeeze(x[0], 1), Spec.F(3, 1, 4))],
    };

    public static readonly OpDef UnsqueezeOp = new("Unsqueeze")
    {
        Infer = c =>
        {
            var s = c.In(0).Shape;
            var axes = c.Const(1)?.AsLongs();
            if (s is null || axes is null) return InferContext.Of(c.In(0).DType, null);
            var rank = s.Rank + axes.Length;
            var set = axes.Select(a => a < 0 ? a + rank : a).ToHashSet();
            var dims = new List<Dim>();
            var k = 0;
            for (var i = 0; i < rank; i++) dims.Add(set.Contains(i) ? 1 : s.Dims[k++]);
            return InferContext.Of(c.In(0).DType, new Shape(dims.ToImmutableArray()));
        },
        Grad = g => [g.B.Squeeze(g.Dy, g.B.ConstantOf(g.X(1))!.AsLongs()), null],
        Cases = [GradCase.Of("two-axes", (b, x) => b.Unsqueeze(x[0], 0, -1), Spec.F(3, 4))],
    };

    public static readonly OpDef ExpandOp = new("Expand")
    {
        Infer = c =>
        {
            var target = c.Const(1)?.AsLongs();
            return InferContext.Of(c.In(0).DType, target is null ? null : Broadcasting.Infer(c.In(0).Shape, Shape.Of(target)));
        },
        Grad = g => [g.B.SumTo(g.Dy, g.X(0)), null],
        Cases = [GradCase.Of("broadcast", (b, x) => b.Expand(x[0], 2, 3, 4), Spec.F(3, 1))],
    };

    private static Shape? InferReshape(Shape? x, long[]? target)
    {
        if (target is null) return null;
        var dims = new Dim[target.Length];
        var inferAt = -1;
        for (var i = 0; i < target.Length; i++)
        {
            if (target[i] == 0) dims[i] = x is not null && i < x.Rank ? x[i] : Dim.Unknown;
            else if (target[i] == -1) inferAt = i;
            else dims[i] = target[i];
        }
        if (inferAt >= 0)
        {
            dims[inferAt] = Dim.Unknown;
            var known = dims.Where((_, i) => i != inferAt).ToArray();
            if (x is { IsStatic: true } && known.All(d => d.IsStatic))
            {
                dims[inferAt] = x.Count / known.Aggregate(1L, (a, d) => a * d.Value);
            }
        }
        return new Shape(dims.ToImmutableArray());
    }

    public static Value Reshape(this Builder b, Value x, params long[] shape) => b.Apply1(ReshapeOp, [x, b.Ints(shape)]);

    /// <summary>Reshape to another value's shape (static when known, else through Shape at run time).</summary>
    public static Value ReshapeLike(this Builder b, Value x, Value like) =>
        like.Shape is { IsStatic: true } s ? b.Reshape(x, s.ToLongs()) : b.Apply1(ReshapeOp, [x, b.ShapeOf(like)]);

    public static Value Transpose(this Builder b, Value x, params long[] perm) => b.Apply1(TransposeOp, [x], A.Of(("perm", perm)));
    public static Value Squeeze(this Builder b, Value x, params long[] axes) => b.Apply1(SqueezeOp, [x, b.Ints(axes)]);
    public static Value Unsqueeze(this Builder b, Value x, params long[] axes) => b.Apply1(UnsqueezeOp, [x, b.Ints(axes)]);
    public static Value Expand(this Builder b, Value x, params long[] shape) => b.Apply1(ExpandOp, [x, b.Ints(shape)]);

    /// <summary>Broadcasts x to the shape of <paramref name="like"/>.</summary>
    public static Value ExpandTo(this Builder b, Value x, Value like)
    {
        if (x.Shape is { } xs && like.Shape is { } ls && xs.SameAs(ls)) return x;
        if (like.Shape is { IsStatic: true } s) return b.Expand(x, s.ToLongs());
        var v = b.Apply1(ExpandOp, [x, b.ShapeOf(like)]);
        return like.Shape is { } ls2 ? b.Refine(v, ls2) : v;
    }
}
