using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Optim;

/// <summary>A trainable tensor of the optimizer graph: its (HF-style) name and static shape.</summary>
public sealed record ParamSpec(string Name, long[] Shape);

/// <summary>
/// What the optimizer step does besides AdamW: optional gradient scaling by a run-time scalar
/// (<c>grad_scale</c>, e.g. 1/total valid tokens of an accumulated step), optional global-norm clipping.
/// </summary>
public sealed record OptimizerOptions(AdamWOptions AdamW, double? MaxGradNorm = null, bool GradScaleInput = false, DType StepDType = DType.Int64);

/// <summary>
/// The optimizer step: (grad × grad_scale) → clip → AdamW. <see cref="Build"/> makes the standalone graph;
/// <see cref="EmitStep"/> appends the same step to a training graph (fused gradient + update).
/// <para>IO contract: inputs <c>step</c>, <c>lr</c>, optionally <c>grad_scale</c> (float32 scalar), and per
/// tensor <c>&lt;name&gt;</c>, <c>&lt;name&gt;.grad</c> (standalone only), <c>&lt;name&gt;.m</c>, <c>&lt;name&gt;.v</c>;
/// outputs <c>grad_norm</c> (float32 scalar, after scaling, before clipping) and per tensor
/// <c>&lt;name&gt;.new</c>, <c>&lt;name&gt;.m.new</c>, <c>&lt;name&gt;.v.new</c> (see <see cref="AdamW"/>).</para>
/// </summary>
public static class OptimizerGraph
{
    public const string GradScaleInput = "grad_scale";
    public const string GradNormOutput = "grad_norm";
    public const string UpdateScaleOutput = "update_scale";

    /// <summary>The standalone optimizer-step graph for these tensors.</summary>
    public static Graph Build(IReadOnlyList<ParamSpec> tensors, OptimizerOptions o, string name = "optimizer_step")
    {
        var dup = tensors.GroupBy(t => t.Name).FirstOrDefault(g => g.Count() > 1);
        if (dup != null) throw Fail.Bug($"trainable tensor '{dup.Key}' listed twice");
        var b = new Builder(name);
        var trained = tensors.Select(t => (
            Param: b.Input(t.Name, DType.Float32, Shape.Of(t.Shape)),
            Grad: b.Input(AdamW.GradName(t.Name), DType.Float32, Shape.Of(t.Shape)))).ToArray();
        EmitStep(b, o, trained);
        return b.Build();
    }

    /// <summary>
    /// The second half of a chunked step: grad × grad_scale → AdamW for one tensor, without the norm that
    /// <see cref="Build"/> always computes (the chunk's norm is not the step's). Same IO as <see cref="Build"/>
    /// with <see cref="OptimizerOptions.GradScaleInput"/>, less <c>grad_norm</c>.
    /// </summary>
    /// <param name="fused">the update as one com.mixlora AdamWStep node (<see cref="AdamWOps"/>, a CPU kernel of the trainer).</param>
    public static Graph BuildUpdate(ParamSpec tensor, AdamWOptions adamW, bool fused = false)
    {
        var b = new Builder("optimizer_update");
        var (step, lr) = AdamW.DeclareScalars(b);
        var param = b.Input(tensor.Name, DType.Float32, Shape.Of(tensor.Shape));
        var grad = b.Input(AdamW.GradName(tensor.Name), DType.Float32, param.Shape);
        AdamW.EmitWithState(b, adamW, [(param, grad)], step, lr, b.Input(GradScaleInput, DType.Float32, Shape.Scalar), fused);
        return b.Build();
    }

    /// <summary>
    /// The first half of a step split over chunks of one flat vector: input <c>&lt;name&gt;.grad</c> (count)
    /// and <c>grad_scale</c> (positive); outputs <c>grad_norm</c> (of the scaled gradient, as <see cref="EmitStep"/>) and
    /// <c>update_scale</c> = grad_scale × the clip factor (grad_scale alone without clipping). Each chunk is
    /// then updated by <see cref="BuildUpdate"/>, its grad_scale input fed update_scale: a chunk's
    /// temporaries are chunk-sized, where one graph over the whole vector holds several of its size.
    /// </summary>
    public static Graph BuildNorm(string name, long count, double? maxGradNorm)
    {
        var b = new Builder("optimizer_norm");
        var grad = b.Input(AdamW.GradName(name), DType.Float32, Shape.Of([count]));              // (P)
        var scale = b.Input(GradScaleInput, DType.Float32, Shape.Scalar);
        // ‖g · s‖ = ‖g‖ · s for the positive grad_scale, without a vector-sized g · s temporary
        var norm = b.Mul(GradClip.GlobalNorm(b, [grad]), scale);                                 // ()
        b.Output(norm, GradNormOutput);
        b.Output(maxGradNorm is { } max ? b.Mul(scale, GradClip.Factor(b, norm, max)) : b.Apply1(ShapeOps.Identity, [scale]), UpdateScaleOutput);
        return b.Build();
    }

    /// <summary>
    /// Declares <c>step</c>, <c>lr</c> (and <c>grad_scale</c>) and the moment inputs, emits
    /// scale → clip → AdamW for the given parameters and gradients, and marks the outputs.
    /// </summary>
    public static IReadOnlyList<AdamWResult> EmitStep(Builder b, OptimizerOptions o, IReadOnlyList<(Value Param, Value Grad)> trained)
    {
        var (step, lr) = AdamW.DeclareScalars(b, o.StepDType);
        IReadOnlyList<Value> grads = trained.Select(t => t.Grad).ToArray();
        if (o.GradScaleInput)
        {
            var scale = b.Input(GradScaleInput, DType.Float32, Shape.Scalar);
            grads = grads.Select(g => b.Mul(b.Cast(g, DType.Float32), scale)).ToArray();
        }
        var (clipped, norm) = GradClip.Emit(b, grads, o.MaxGradNorm);
        b.Output(norm, GradNormOutput);
        var withGrads = trained.Select((t, i) => (t.Param, clipped[i])).ToArray();
        return AdamW.EmitWithState(b, o.AdamW, withGrads, step, lr);
    }
}
