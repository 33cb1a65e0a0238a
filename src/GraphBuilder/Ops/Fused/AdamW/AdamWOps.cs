using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>
/// The AdamW update of one float32 tensor as one kernel (domain <c>com.mixlora</c>, the trainer's CPU kernel), the same
/// float32 operations in the same order as <see cref="Optim.AdamW"/>'s composed nodes, so the result is bit for bit theirs:
/// <code>
///   g ← G · scale     P ← P · decay (when given)
///   M ← M·β1 + g·(1 − β1)      V ← V·β2 + (g·g)·(1 − β2)
///   P ← P − (M / (√V / √(1 − β2ᵗ) + ε)) · step_size
/// </code>
/// Inputs P, G, M, V (same shape), then float32 scalars scale, step_size, √(1 − β2ᵗ), β1, 1 − β1, β2, 1 − β2, ε and
/// an optional decay; outputs P, M, V. Composed, that is ~14 passes over the tensor; fused, one read of each input
/// and one write of each output (README, "Measured on the CPU", has its profile).
/// </summary>
public static class AdamWOps
{
    public static readonly OpDef AdamWStepOp = new("AdamWStep", FusedDomain.Name)
    {
        Outputs = 3,
        Infer = c => [new(c.In(0).DType, c.In(0).Shape), new(c.In(2).DType, c.In(2).Shape), new(c.In(3).DType, c.In(3).Shape)],
        NoGradReason = "the optimizer's update (not differentiated)",
    };

    /// <summary>(P, M, V) after one AdamW step; <paramref name="scalars"/> in the order above (decay may be left off).</summary>
    public static (Value P, Value M, Value V) AdamWStep(this Builder b, Value p, Value g, Value m, Value v, IReadOnlyList<Value> scalars)
    {
        Value[] tensors = [p, g, m, v];
        if (tensors.Any(t => t.DType != DType.Float32 || !Equals(t.Shape, p.Shape)) || scalars.Count is < 8 or > 9 || scalars.Any(s => s.DType != DType.Float32 || s.Shape is not { Rank: 0 }))
            throw Fail.Bug($"AdamWStep takes float32 P, G, M, V of one shape and 8 or 9 float32 scalars; got {string.Join(", ", tensors.Concat(scalars))}");
        var r = b.Apply(AdamWStepOp, [.. tensors, .. scalars]);
        return (r[0], r[1], r[2]);
    }
}
