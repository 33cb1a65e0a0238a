using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Losses;

/// <summary>
/// Mean causal-LM cross-entropy as in HF <c>LlamaForCausalLM</c>: position t predicts labels[:, t+1],
/// the last position of each row predicts nothing, labels equal to the ignore index (−100) are skipped,
/// and the loss is the mean of −log p(target) over the remaining tokens. The shift happens inside the
/// graph, so the trainer feeds the labels exactly as the data gives them (aligned with input_ids).
/// Computed in float32 (float64 logits stay float64, for gradient checks); 0 when no token is valid.
/// </summary>
public static class CausalLmLoss
{
    public const long IgnoreIndex = -100;

    //  labels (B,T) ──drop col 0, append −100──▶ targets (B,T) ──reshape──▶ (N,1)
    //                                                  │
    //                                   valid = targets ≠ −100 (N,1) ──Cast──▶ mask (N,1)
    //                                                  │                          │
    //  logits (N,V) ─Cast fp32─▶ LogSoftmax ─▶ logp (N,V)                          │
    //                                  │                                          │
    //            Σ_v [v == target] · logp  (one-hot pick, no gather) ─▶ (N,1)      │
    //                                  │                                          │
    //                     nll = −picked ⊙ mask ─ΣN─▶ sum ()         count = Σ mask ()
    //                                  └──────────▶ loss = sum / max(count, 1) ◀──┘
    /// <summary>
    /// Emits the loss. <paramref name="logits"/> is (N, V) = (B·T, V) of any float dtype,
    /// <paramref name="labels"/> is (B, T) int64 with static B and T. Returns the scalar loss (float32,
    /// or float64 for float64 logits) and the number of valid target tokens as a float32 scalar.
    /// With <paramref name="fused"/> (graphs for the trainer's runtime), −log p(target) per row is the
    /// <see cref="CrossEntropyOps"/> kernel on the logits as they are (float64 logits stay composed).
    /// </summary>
    public static (Value Loss, Value ValidCount) Emit(Builder b, Value logits, Value labels, long ignoreIndex = IgnoreIndex, bool fused = false)
    {
        var (rows, cols) = CheckShapes(logits, labels);
        var compute = logits.DType == DType.Float64 ? DType.Float64 : DType.Float32;
        using var _ = b.Scope("causal_lm_loss");

        var next = b.Slice(labels, [1], [cols], [1]);                                          // (B, T−1)
        var pad = b.Const(TensorData.FromLongs("", Enumerable.Repeat(ignoreIndex, (int)rows).ToArray(), rows, 1)); // (B, 1)
        var targets = b.Reshape(b.Concat(1, next, pad), -1, 1);                                 // (N, 1)
        var valid = b.Not(b.Equal(targets, b.Int(ignoreIndex)));                               // (N, 1) bool
        if (fused && compute == DType.Float32)
        {
            var (nll, _) = b.SoftmaxCrossEntropy(logits, b.Reshape(targets, -1));                // (N), 0 where ignored
            var n = b.ReduceSum(b.Cast(valid, DType.Float32));                                 // ()
            return (b.Div(b.ReduceSum(nll), b.Max(n, b.Scalar(1, DType.Float32))), n);
        }

        // an ignored target (−100) picks column 0 and is masked out below
        var logp = b.LogSoftmax(b.Cast(logits, compute), -1);                                  // (N, V)
        var picked = b.GatherElements(logp, b.Where(valid, targets, b.Int(0)), 1);             // (N, 1)
        var mask = b.Cast(valid, compute);                                                      // (N, 1)
        var sum = b.ReduceSum(b.Neg(b.Mul(picked, mask)));                                      // ()
        var count = b.ReduceSum(mask);                                                          // ()
        var loss = b.Div(sum, b.Max(count, b.Scalar(1, compute)));                              // ()
        return (loss, b.Cast(count, DType.Float32));
    }

    private static (long Rows, long Cols) CheckShapes(Value logits, Value labels)
    {
        if (labels.DType != DType.Int64 || labels.Shape is not { Rank: 2, IsStatic: true } ls)
        {
            throw Fail.Bug($"causal-LM labels must be int64 (B, T) with static B and T, got {labels}");
        }
        if (!logits.DType.IsFloat() || logits.Shape is not { Rank: 2 } xs)
        {
            throw Fail.Bug($"causal-LM logits must be a float (B·T, V) tensor, got {logits}");
        }
        var (rows, cols) = (ls[0].Value, ls[1].Value);
        if (xs[0].IsStatic && xs[0].Value != rows * cols)
        {
            throw Fail.Bug($"logits {logits} have {xs[0]} rows but labels {labels} hold {rows * cols} positions");
        }
        return (rows, cols);
    }
}
