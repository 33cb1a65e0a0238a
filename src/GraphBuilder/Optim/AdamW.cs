using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Optim;

/// <summary>AdamW hyper-parameters, fixed when the graph is built (torch.optim.AdamW defaults).</summary>
public sealed record AdamWOptions(double Beta1 = 0.9, double Beta2 = 0.999, double Eps = 1e-8, double WeightDecay = 0.0)
{
    /// <summary>Rejects values torch.optim.AdamW rejects.</summary>
    public AdamWOptions Validate()
    {
        Fail.If(Beta1 is < 0 or >= 1 || double.IsNaN(Beta1), $"AdamW beta1 = {Fail.Show(Beta1)} is outside [0, 1)", "use a value such as 0.9");
        Fail.If(Beta2 is < 0 or >= 1 || double.IsNaN(Beta2), $"AdamW beta2 = {Fail.Show(Beta2)} is outside [0, 1)", "use a value such as 0.999");
        Fail.If(!(Eps >= 0), $"AdamW eps = {Fail.Show(Eps)} is negative", "use a small positive value such as 1e-8");
        Fail.If(!(WeightDecay >= 0), $"AdamW weight decay = {Fail.Show(WeightDecay)} is negative", "use 0 or a positive value such as 0.01");
        return this;
    }
}

/// <summary>One trainable tensor's update inputs: the parameter, its gradient and its two moments.</summary>
public sealed record AdamWSlot(Value Param, Value Grad, Value M, Value V);

/// <summary>One trainable tensor's updated parameter and moments.</summary>
public sealed record AdamWResult(Value Param, Value M, Value V);

/// <summary>
/// The AdamW update (torch.optim.AdamW, decoupled weight decay, no amsgrad) as graph nodes, in float32:
/// <code>
///   p ← p · (1 − lr·wd)
///   m ← β1 m + (1 − β1) g          v ← β2 v + (1 − β2) g²
///   p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)      (= p − lr · m̂ / (√v̂ + ε))
/// </code>
/// <c>step</c> (int64 or float32 scalar) is t, the 1-based count of this update; the bias corrections and
/// lr/(1 − β1ᵗ) are computed in float64 in-graph, as torch does on the host, then used in float32.
/// <para>IO contract (<see cref="EmitWithState"/>, used by the training graph and by
/// <see cref="OptimizerGraph"/>): inputs <c>&lt;name&gt;</c> (the parameter), <c>&lt;name&gt;.m</c>,
/// <c>&lt;name&gt;.v</c> (float32, shaped like the parameter), scalars <c>step</c> and <c>lr</c>; outputs
/// <c>&lt;name&gt;.new</c>, <c>&lt;name&gt;.m.new</c>, <c>&lt;name&gt;.v.new</c>. A standalone optimizer graph
/// also takes <c>&lt;name&gt;.grad</c>. Outputs go to second buffers that the trainer swaps in after the run.</para>
/// </summary>
public static class AdamW
{
    public const string StepInput = "step";
    public const string LrInput = "lr";

    public static string GradName(string param) => param + ".grad";
    public static string MName(string param) => param + ".m";
    public static string VName(string param) => param + ".v";
    public static string NewName(string param) => param + ".new";
    public static string MNewName(string param) => param + ".m.new";
    public static string VNewName(string param) => param + ".v.new";

    /// <summary>Declares the scalar <c>step</c> (int64 or float32) and <c>lr</c> (float32) inputs.</summary>
    public static (Value Step, Value Lr) DeclareScalars(Builder b, DType stepDType = DType.Int64)
    {
        if (stepDType is not (DType.Int64 or DType.Float32)) throw Fail.Arg(nameof(stepDType), stepDType, "int64 or float32");
        return (b.Input(StepInput, stepDType, Shape.Scalar), b.Input(LrInput, DType.Float32, Shape.Scalar));
    }

    /// <summary>
    /// Declares <c>&lt;name&gt;.m</c> / <c>&lt;name&gt;.v</c> inputs for each (parameter, gradient), emits the
    /// update and marks <c>&lt;name&gt;.new</c>, <c>.m.new</c>, <c>.v.new</c> as graph outputs.
    /// </summary>
    /// <param name="gradScale">a float32 scalar the gradients are multiplied by first (null: none).</param>
    /// <param name="fused">one <see cref="AdamWOps"/> node per tensor (the trainer's CPU kernel) instead of the composed nodes.</param>
    public static IReadOnlyList<AdamWResult> EmitWithState(Builder b, AdamWOptions o, IReadOnlyList<(Value Param, Value Grad)> trained, Value step, Value lr,
        Value? gradScale = null, bool fused = false)
    {
        var slots = trained.Select(t => new AdamWSlot(t.Param, t.Grad,
            b.Input(MName(t.Param.Name), DType.Float32, t.Param.Shape),
            b.Input(VName(t.Param.Name), DType.Float32, t.Param.Shape))).ToArray();
        var results = Emit(b, o, slots, step, lr, gradScale, fused);
        for (var i = 0; i < slots.Length; i++)
        {
            var name = slots[i].Param.Name;
            b.Output(results[i].Param, NewName(name));
            b.Output(results[i].M, MNewName(name));
            b.Output(results[i].V, VNewName(name));
        }
        return results;
    }

    /// <summary>Emits the update nodes for existing values (inside any graph); declares nothing.</summary>
    public static IReadOnlyList<AdamWResult> Emit(Builder b, AdamWOptions o, IReadOnlyList<AdamWSlot> slots, Value step, Value lr, Value? gradScale = null, bool fused = false)
    {
        o.Validate();
        using var _ = b.Scope("adamw");
        var k = Coefficients(b, o, step, lr);
        if (fused) return slots.Select(s => Fused(b, k, s, gradScale)).ToArray();
        return slots.Select(s => Update(b, k, gradScale is null ? s : s with { Grad = b.Mul(s.Grad, gradScale) })).ToArray();
    }

    /// <summary>The update as one <see cref="AdamWOps.AdamWStep"/> node (the same float32 operations as <see cref="Update"/>).</summary>
    private static AdamWResult Fused(Builder b, Coeffs k, AdamWSlot s, Value? gradScale)
    {
        Value[] scalars = [gradScale ?? b.Scalar(1, DType.Float32), k.StepSize, k.Bc2Sqrt, k.B1, k.OneMinusB1, k.B2, k.OneMinusB2, k.Eps];
        var (p, m, v) = b.AdamWStep(s.Param, b.Cast(s.Grad, DType.Float32), s.M, s.V, k.Decay is { } d ? [.. scalars, d] : scalars);
        return new AdamWResult(p, m, v);
    }

    /// <summary>Per-step float32 scalars shared by every tensor's update.</summary>
    private sealed record Coeffs(Value? Decay, Value StepSize, Value Bc2Sqrt, Value B1, Value OneMinusB1, Value B2, Value OneMinusB2, Value Eps);

    private static Coeffs Coefficients(Builder b, AdamWOptions o, Value step, Value lr)
    {
        const DType F64 = DType.Float64;
        if (step.Shape is not { Rank: 0 } || lr.Shape is not { Rank: 0 }) throw Fail.Bug($"AdamW step {step} and lr {lr} must be scalars");
        var t = b.Cast(step, F64);                                                         // ()
        var lr64 = b.Cast(lr, F64);                                                        // ()
        var one = b.Scalar(1, F64);
        var bc1 = b.Sub(one, b.Pow(b.Scalar(o.Beta1, F64), t));                            // 1 − β1ᵗ
        var bc2 = b.Sub(one, b.Pow(b.Scalar(o.Beta2, F64), t));                            // 1 − β2ᵗ
        var stepSize = b.Cast(b.Div(lr64, bc1), DType.Float32);                            // lr / (1 − β1ᵗ)
        var bc2Sqrt = b.Cast(b.Sqrt(bc2), DType.Float32);                                  // √(1 − β2ᵗ)
        Value? decay = o.WeightDecay == 0 ? null
            : b.Cast(b.Sub(one, b.Mul(lr64, b.Scalar(o.WeightDecay, F64))), DType.Float32); // 1 − lr·wd
        Value F(double x) => b.Scalar(x, DType.Float32);
        return new Coeffs(decay, stepSize, bc2Sqrt, F(o.Beta1), F(1 - o.Beta1), F(o.Beta2), F(1 - o.Beta2), F(o.Eps));
    }

    private static AdamWResult Update(Builder b, Coeffs k, AdamWSlot s)
    {
        foreach (var x in new[] { s.Param, s.M, s.V })
        {
            if (x.DType != DType.Float32) throw Fail.Bug($"AdamW keeps parameters and moments in float32; got {x}");
        }
        var g = b.Cast(s.Grad, DType.Float32);                                             // like p
        var p = k.Decay is { } d ? b.Mul(s.Param, d) : s.Param;                            // p (1 − lr·wd)
        var m = b.Add(b.Mul(s.M, k.B1), b.Mul(g, k.OneMinusB1));                           // β1 m + (1 − β1) g
        var v = b.Add(b.Mul(s.V, k.B2), b.Mul(b.Mul(g, g), k.OneMinusB2));                 // β2 v + (1 − β2) g²
        var denom = b.Add(b.Div(b.Sqrt(v), k.Bc2Sqrt), k.Eps);                             // √v̂ + ε
        var newP = b.Sub(p, b.Mul(b.Div(m, denom), k.StepSize));                           // p − lr m̂ / (√v̂ + ε)
        return new AdamWResult(newP, m, v);
    }
}
