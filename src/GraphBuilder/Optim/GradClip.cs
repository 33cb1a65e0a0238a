using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Optim;

/// <summary>
/// Global-norm gradient clipping with torch.nn.utils.clip_grad_norm_ semantics (L2 norm, float32):
/// <code>
///   norm  = √(Σ_tensors Σ g²)
///   scale = min(1, max_norm / (norm + 1e-6))       g ← g · scale
/// </code>
/// The norm is always returned: the trainer logs grad_norm whether or not it clips.
/// </summary>
public static class GradClip
{
    /// <summary>Added to the norm before dividing, as torch does.</summary>
    public const double NormEps = 1e-6;

    /// <summary>√(Σ ‖g‖²) over all gradients, as a float32 scalar.</summary>
    public static Value GlobalNorm(Builder b, IReadOnlyList<Value> grads)
    {
        if (grads.Count == 0) throw Fail.Bug("global gradient norm of no gradients");
        Value? total = null;
        foreach (var grad in grads)
        {
            var g = b.Cast(grad, DType.Float32);                                  // like grad
            var sq = b.ReduceSum(b.Mul(g, g));                                    // ()
            total = total is null ? sq : b.Add(total, sq);
        }
        return b.Sqrt(total!);                                                    // ()
    }

    /// <summary>
    /// Emits the norm and, when <paramref name="maxNorm"/> is set, the clipped float32 gradients
    /// (otherwise the gradients come back as float32, unscaled).
    /// </summary>
    public static (IReadOnlyList<Value> Grads, Value Norm) Emit(Builder b, IReadOnlyList<Value> grads, double? maxNorm)
    {
        using var _ = b.Scope("grad_clip");
        var norm = GlobalNorm(b, grads);
        if (maxNorm is not { } max) return (grads.Select(g => b.Cast(g, DType.Float32)).ToArray(), norm);
        var scale = Factor(b, norm, max);                                            // ()
        return (grads.Select(g => b.Mul(b.Cast(g, DType.Float32), scale)).ToArray(), norm);
    }

    /// <summary>min(1, max_norm / (norm + 1e-6)), a float32 scalar.</summary>
    public static Value Factor(Builder b, Value norm, double maxNorm)
    {
        Fail.If(!(maxNorm > 0), $"max gradient norm = {Fail.Show(maxNorm)} is not positive", "use a positive value such as 1.0, or turn clipping off");
        var coef = b.Div(b.Scalar(maxNorm, DType.Float32), b.AddScalar(norm, NormEps));  // ()
        return b.Min(coef, b.Scalar(1, DType.Float32));                               // ()
    }
}
