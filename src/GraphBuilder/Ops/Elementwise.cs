using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>Broadcasting arithmetic and unary math: forward emitters and gradient rules side by side.</summary>
public static class ElementwiseOps
{
    private static OutSpec[] Binary(InferContext c) => InferContext.Of(c.In(0).DType, Broadcasting.Infer(c.In(0).Shape, c.In(1).Shape));

    private static readonly Spec[] Same = [Spec.F(3, 4), Spec.F(3, 4)];
    private static readonly Spec[] Bcast = [Spec.F(2, 3, 4), Spec.F(3, 1)];
    private static readonly Spec[] BcastLead = [Spec.F(4), Spec.F(2, 3, 4)];

    private static GradCase[] BinaryCases(Func<Builder, Value, Value, Value> f, bool positiveRhs = false)
    {
        Spec R(Spec s) => positiveRhs ? s with { Gen = Gen.Positive } : s;
        return
        [
            GradCase.Of("same", (b, x) => f(b, x[0], x[1]), Same[0], R(Same[1])),
            GradCase.Of("broadcast", (b, x) => f(b, x[0], x[1]), Bcast[0], R(Bcast[1])),
            GradCase.Of("broadcast-leading", (b, x) => f(b, x[0], x[1]), BcastLead[0], R(BcastLead[1])),
        ];
    }

    public static readonly OpDef AddOp = new("Add")
    {
        Infer = Binary,
        Grad = g => [g.Wants(0) ? g.B.SumTo(g.Dy, g.X(0)) : null, g.Wants(1) ? g.B.SumTo(g.Dy, g.X(1)) : null],
        Cases = [.. BinaryCases((b, x, y) => b.Add(x, y))],
    };

    public static readonly OpDef SubOp = new("Sub")
    {
        Infer = Binary,
        Grad = g => [g.Wants(0) ? g.B.SumTo(g.Dy, g.X(0)) : null, g.Wants(1) ? g.B.SumTo(g.B.Neg(g.Dy), g.X(1)) : null],
        Cases = [.. BinaryCases((b, x, y) => b.Sub(x, y))],
    };

    public static readonly OpDef MulOp = new("Mul")
    {
        Infer = Binary,
        Grad = g => [
            g.Wants(0) ? g.B.SumTo(g.B.Mul(g.Dy, g.X(1)), g.X(0)) : null,
            g.Wants(1) ? g.B.SumTo(g.B.Mul(g.Dy, g.X(0)), g.X(1)) : null],
        Cases = [.. BinaryCases((b, x, y) => b.Mul(x, y))],
    };

    public static readonly OpDef DivOp = new("Div")
    {
        Infer = Binary,
        // d(x/y) = dy/y ; -dy*x/y^2 = -dy*out/y
        Grad = g => [
            g.Wants(0) ? g.B.SumTo(g.B.Div(g.Dy, g.X(1)), g.X(0)) : null,
            g.Wants(1) ? g.B.SumTo(g.B.Neg(g.B.Div(g.B.Mul(g.Dy, g.Y()), g.X(1))), g.X(1)) : null],
        Cases = [.. BinaryCases((b, x, y) => b.Div(x, y), positiveRhs: true)],
    };

    public static readonly OpDef PowOp = new("Pow")
    {
        Infer = c => InferContext.Of(c.In(0).DType, Broadcasting.Infer(c.In(0).Shape, c.In(1).Shape)),
        // d(x^p)/dx = p x^(p-1) ; d/dp = x^p ln x (x > 0)
        Grad = g =>
        {
            var b = g.B;
            var p = g.X(1);
            Value? dx = null, dp = null;
            if (g.Wants(0)) dx = b.SumTo(b.Mul(g.Dy, b.Mul(p, b.Pow(g.X(0), b.Sub(p, b.Scalar(1, p.DType))))), g.X(0));
            if (g.Wants(1) && b.ConstantOf(p) == null) dp = b.SumTo(b.Mul(g.Dy, b.Mul(g.Y(), b.Log(g.X(0)))), p);
            return [dx, dp];
        },
        Cases = [
            GradCase.Of("tensor-exponent", (b, x) => b.Pow(x[0], x[1]), Spec.Pos(3, 4), Spec.F(3, 4)),
            GradCase.Of("scalar-exponent", (b, x) => b.Pow(x[0], b.Scalar(2.5, DType.Float64)), Spec.Pos(2, 5)),
        ],
    };

    public static readonly OpDef NegOp = new("Neg")
    {
        Infer = c => c.Same(),
        Grad = g => [g.B.Neg(g.Dy)],
        Cases = [GradCase.Of("basic", (b, x) => b.Neg(x[0]), Spec.F(3, 4))],
    };

    public static readonly OpDef ExpOp = new("Exp")
    {
        Infer = c => c.Same(),
        Grad = g => [g.B.Mul(g.Dy, g.Y())],
        Cases = [GradCase.Of("basic", (b, x) => b.Exp(x[0]), Spec.F(3, 4))],
    };

    public static readonly OpDef LogOp = new("Log")
    {
        Infer = c => c.Same(),
        Grad = g => [g.B.Div(g.Dy, g.X(0))],
        Cases = [GradCase.Of("basic", (b, x) => b.Log(x[0]), Spec.Pos(3, 4))],
    };

    public static readonly OpDef SqrtOp = new("Sqrt")
    {
        Infer = c => c.Same(),
        // d sqrt(x) = dy / (2 sqrt(x))
        Grad = g => [g.B.Div(g.Dy, g.B.Mul(g.B.Scalar(2, g.Y().DType), g.Y()))],
        Cases = [GradCase.Of("basic", (b, x) => b.Sqrt(x[0]), Spec.Pos(3, 4))],
    };

    public static readonly OpDef SigmoidOp = new("Sigmoid")
    {
        Infer = c => c.Same(),
        // s' = s (1 - s)
        Grad = g => [g.B.Mul(g.Dy, g.B.Mul(g.Y(), g.B.Sub(g.B.Scalar(1, g.Y().DType), g.Y())))],
        Cases = [GradCase.Of("basic", (b, x) => b.Sigmoid(x[0]), Spec.F(3, 4)), GradCase.Of("rank3", (b, x) => b.Sigmoid(x[0]), Spec.F(2, 2, 3))],
    };

    public static readonly OpDef TanhOp = new("Tanh")
    {
        Infer = c => c.Same(),
        // t' = 1 - t^2
        Grad = g => [g.B.Mul(g.Dy, g.B.Sub(g.B.Scalar(1, g.Y().DType), g.B.Mul(g.Y(), g.Y())))],
        Cases = [GradCase.Of("basic", (b, x) => b.Tanh(x[0]), Spec.F(3, 4))],
    };

    public static readonly OpDef SinOp = new("Sin")
    {
        Infer = c => c.Same(),
        Grad = g => [g.B.Mul(g.Dy, g.B.Cos(g.X(0)))],
        Cases = [GradCase.Of("basic", (b, x) => b.Sin(x[0]), Spec.F(3, 4))],
    };

    public static readonly OpDef CosOp = new("Cos")
    {
        Infer = c => c.Same(),
        Grad = g => [g.B.Neg(g.B.Mul(g.Dy, g.B.Sin(g.X(0))))],
        Cases = [GradCase.Of("basic", (b, x) => b.Cos(x[0]), Spec.F(3, 4))],
    };

    public static readonly OpDef CastOp = new("Cast")
    {
        Infer = c => InferContext.Of((DType)c.Node.Int("to"), c.In(0).Shape),
        // float -> float casts pass the gradient back in the source dtype; casts to/from integers cut it
        Grad = g => [g.X(0).DType.IsFloat() && g.Y().DType.IsFloat() ? g.B.Cast(g.Dy, g.X(0).DType) : null],
        Cases = [GradCase.Of("f64-f32-f64", (b, x) => b.Cast(b.Cast(x[0], DType.Float32), DType.Float64), Spec.F(3, 4)) with { Eps = 1e-2, Tol = 1e-5 }],
    };

    public static Value Add(this Builder b, Value x, Value y) => b.Apply1(AddOp, [x, y]);
    public static Value Sub(this Builder b, Value x, Value y) => b.Apply1(SubOp, [x, y]);
    public static Value Mul(this Builder b, Value x, Value y) => b.Apply1(MulOp, [x, y]);
    public static Value Div(this Builder b, Value x, Value y) => b.Apply1(DivOp, [x, y]);
    public static Value Pow(this Builder b, Value x, Value p) => b.Apply1(PowOp, [x, p]);
    public static Value Neg(this Builder b, Value x) => b.Apply1(NegOp, [x]);
    public static Value Exp(this Builder b, Value x) => b.Apply1(ExpOp, [x]);
    public static Value Log(this Builder b, Value x) => b.Apply1(LogOp, [x]);
    public static Value Sqrt(this Builder b, Value x) => b.Apply1(SqrtOp, [x]);
    public static Value Sigmoid(this Builder b, Value x) => b.Apply1(SigmoidOp, [x]);
    public static Value Tanh(this Builder b, Value x) => b.Apply1(TanhOp, [x]);
    public static Value Sin(this Builder b, Value x) => b.Apply1(SinOp, [x]);
    public static Value Cos(this Builder b, Value x) => b.Apply1(CosOp, [x]);

    public static Value Cast(this Builder b, Value x, DType to) => x.DType == to ? x : b.Apply1(CastOp, [x], A.Of(("to", (long)to)));

    /// <summary>x * scalar, in x's dtype.</summary>
    public static Value Scale(this Builder b, Value x, double s) => b.Mul(x, b.Scalar(s, x.DType));
    public static Value AddScalar(this Builder b, Value x, double s) => b.Add(x, b.Scalar(s, x.DType));
}
