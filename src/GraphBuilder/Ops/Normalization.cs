using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>
/// ORT's fused RMS normalisation (<c>SimplifiedLayerNormalization</c>, ONNX domain, version 1; no backward
/// kernel in the inference build): Y = X · r · scale with r = 1/sqrt(mean(X², axis..) + ε) computed in the
/// stash type. The gradient is our own rule from primitives, in X's dtype, with the per-row quantities first.
/// </summary>
public static class NormalizationOps
{
    public static readonly OpDef SimplifiedLayerNormOp = new("SimplifiedLayerNormalization")
    {
        Outputs = 2,
        // Y like X; inv_std_var in the stash type (as ONNX type inference has it), like X with the normalised axes 1
        Infer = c =>
        {
            var x = c.In(0);
            var stash = (DType)c.Node.Int("stash_type", (long)DType.Float32);
            if (x.Shape is null) return [new(x.DType, null), new(stash, null)];
            var axis = (int)c.Node.Int("axis", -1);
            var from = axis < 0 ? axis + x.Rank : axis;
            var rs = x.Shape;
            for (var i = from; i < x.Rank; i++) rs = rs.With(i, Dim.Of(1));
            return [new(x.DType, x.Shape), new(stash, rs)];
        },
        Grad = Backward,
        // float32 cases (x enters as float64 and is cast): ORT's CPU kernel for float64 x cannot produce
        // inv_std_var (see Attrs), so the kernel is checked in float32 with a wider step and tolerance
        Cases = [
            GradCase.Float32("x-only", (b, x) => b.RmsNormFused(x[0], b.Floats([0.5, -1.5, 2.0, 1.0, 0.25], DType.Float32, 5), 1e-2), Spec.F(3, 5)),
            GradCase.Float32("x-and-weight", (b, x) => b.RmsNormFused(x[0], x[1], 1e-2), Spec.F(4, 6), Spec.F(6)),
            GradCase.Float32("3d", (b, x) => b.RmsNormFused(x[0], x[1], 1e-5), Spec.F(2, 3, 4), Spec.F(4)),
            GradCase.Float32("through-inv-std", (b, x) =>
            {
                var r = b.Apply(SimplifiedLayerNormOp!, [x[0], x[1]], Attrs(1e-2));
                return b.Mul(r[0], r[1]);
            }, Spec.F(3, 4), Spec.F(4)),
        ],
    };

    /// <summary>
    /// With r = inv_std_var, gw = dy ⊙ w and the normalised axis last:
    /// dx = r ⊙ (gw − x ⊙ r² ⊙ (mean(gw ⊙ x) + dr / D)), dw = SumTo(dy ⊙ x ⊙ r, w).
    /// The (N, 1) coefficient is formed in the stash type; the (N, D) passes run in X's dtype.
    /// </summary>
    private static Value?[] Backward(GradContext g)
    {
        var b = g.B;
        var x = g.X(0);
        var t = x.DType;
        var axis = g.Node.Int("axis", -1);
        if (axis != -1 && axis != x.Rank - 1) throw Fail.Bug($"SimplifiedLayerNormalization gradient is defined for the last axis ({g.Node.Name}, axis {axis})");
        var (dy, dr) = (g.OutGrads[0], g.OutGrads[1]);
        var r = g.Y(1);                                                                        // (N, 1) stash
        var rT = b.Cast(r, t);
        Value? dx = null, dw = null;
        if (g.Wants(0))
        {
            var gw = dy is null ? null : b.Mul(dy, b.Cast(g.X(1), t));                        // (N, D)
            // the row mean in the stash dtype (fp32): ORT has no 16-bit ReduceMean kernel, and an fp32 mean keeps
            // the reference's precision (HF's RMSNorm backward runs in fp32)
            Value? inner = gw is null ? null : b.ReduceMean(b.Cast(b.Mul(gw, x), r.DType), [-1], keepDims: true);   // (N, 1)
            if (dr is not null)
            {
                var d = x.Shape is { } s && s[-1].IsStatic ? s[-1].Value : throw Fail.Bug($"SimplifiedLayerNormalization inv_std_var gradient needs a static last dim ({g.Node.Name})");
                var viaR = b.Scale(b.Cast(dr, r.DType), 1.0 / d);
                inner = inner is null ? viaR : b.Add(inner, viaR);
            }
            var coef = b.Cast(b.Mul(b.Mul(r, r), inner!), t);                                // (N, 1)
            var xc = b.Mul(x, coef);                                                           // (N, D)
            dx = b.Mul(gw is null ? b.Neg(xc) : b.Sub(gw, xc), rT);
        }
        if (g.Wants(1) && dy is not null)
        {
            dw = b.SumTo(b.Cast(b.Mul(b.Mul(dy, x), rT), g.X(1).DType), g.X(1));
        }
        return [dx, dw];
    }

    /// <summary>
    /// axis −1, epsilon and a float32 stash. Float64 x never reaches this op (<see cref="RmsNormFused"/>): ORT's
    /// CPU kernel has no float64 path that writes inv_std_var.
    /// </summary>
    private static KeyValuePair<string, object>[] Attrs(double eps) =>
        A.Of(("axis", -1L), ("epsilon", eps), ("stash_type", (long)DType.Float32));

    /// <summary>
    /// RMS norm over the last axis as one fused kernel: x · 1/sqrt(mean(x²) + eps) · weight, statistics in
    /// float32, output in x's dtype. The weight is cast to x's dtype. Float64 x is composed from
    /// primitives instead (exact in float64): ORT's CPU kernel cannot produce inv_std_var for float64 x.
    /// </summary>
    public static Value RmsNormFused(this Builder b, Value x, Value weight, double eps)
    {
        var w = b.Cast(weight, x.DType);
        if (x.DType == DType.Float64)
        {
            var ms = b.ReduceMean(b.Mul(x, x), [-1], keepDims: true);
            return b.Mul(b.Div(x, b.Sqrt(b.AddScalar(ms, eps))), w);
        }
        return b.Apply(SimplifiedLayerNormOp, [x, w], Attrs(eps))[0];
    }
}
