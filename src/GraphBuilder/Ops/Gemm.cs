using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>
/// Gemm: Y = α·op(A)·op(B) + β·C on 2-D operands. Linear layers keep tokens flattened to (N, D) and use
/// transB so HF [out, in] weights are used as stored, with no Transpose node.
/// </summary>
public static class GemmOps
{
    public static readonly OpDef GemmOp = new("Gemm")
    {
        Infer = c =>
        {
            var (a, w) = (c.In(0).Shape, c.In(1).Shape);
            if (a is null || w is null) return InferContext.Of(c.In(0).DType, null);
            var m = c.Node.Int("transA", 0) != 0 ? a[1] : a[0];
            var n = c.Node.Int("transB", 0) != 0 ? w[0] : w[1];
            return InferContext.Of(c.In(0).DType, Shape.Of(m, n));
        },
        Grad = g =>
        {
            var b = g.B;
            var (ta, tb) = (g.Node.Int("transA", 0) != 0, g.Node.Int("transB", 0) != 0);
            var (alpha, beta) = (g.Node.Float("alpha", 1), g.Node.Float("beta", 1));
            var (x, w, dy) = (g.X(0), g.X(1), g.Dy);
            // d op(A) = α dY op(B)ᵀ ; d op(B) = α op(A)ᵀ dY ; transpose back where op transposed
            Value? dA = !g.Wants(0) ? null : !ta ? b.Gemm(dy, w, transB: !tb, alpha: alpha) : b.Gemm(w, dy, transA: tb, transB: true, alpha: alpha);
            Value? dB = !g.Wants(1) ? null : !tb ? b.Gemm(x, dy, transA: !ta, alpha: alpha) : b.Gemm(dy, x, transA: true, transB: ta, alpha: alpha);
            Value? dC = g.Wants(2) ? b.SumTo(beta == 1 ? dy : b.Scale(dy, beta), g.X(2)) : null;
            return [dA, dB, dC];
        },
        Cases = [
            GradCase.Of("plain", (b, x) => b.Gemm(x[0], x[1]), Spec.F(3, 4), Spec.F(4, 2)),
            GradCase.Of("transB-bias", (b, x) => b.Gemm(x[0], x[1], x[2], transB: true), Spec.F(3, 4), Spec.F(5, 4), Spec.F(5)),
            GradCase.Of("transA-alpha", (b, x) => b.Gemm(x[0], x[1], transA: true, alpha: 0.5f), Spec.F(4, 3), Spec.F(4, 2)),
            GradCase.Of("both-beta", (b, x) => b.Gemm(x[0], x[1], x[2], transA: true, transB: true, beta: 2f), Spec.F(4, 3), Spec.F(2, 4), Spec.F(3, 2)),
        ],
    };

    public static Value Gemm(this Builder b, Value a, Value w, Value? c = null, bool transA = false, bool transB = false, float alpha = 1, float beta = 1)
    {
        var attrs = new List<(string, object)>();
        if (transA) attrs.Add(("transA", 1));
        if (transB) attrs.Add(("transB", 1));
        if (alpha != 1) attrs.Add(("alpha", alpha));
        if (beta != 1) attrs.Add(("beta", beta));
        return b.Apply1(GemmOp!, c is null ? [a, w] : [a, w, c], A.Of([.. attrs]));
    }

    /// <summary>x Wᵀ (+ bias) for x (N, in) and an HF weight W [out, in].</summary>
    public static Value Linear(this Builder b, Value x, Value weight, Value? bias = null) => b.Gemm(x, weight, bias, transB: true);
}
