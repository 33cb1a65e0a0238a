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
