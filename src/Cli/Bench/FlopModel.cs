using MixLoRA.GraphBuilder.Models;

namespace MixLoRA.Cli.Bench;

/// <summary>
/// Model FLOPs of one training token (forward + backward), the numerator of MFU:
/// <code>
/// FLOPs/token = 4·P_frozen_matmul          frozen linears: 2 forward + 2 for the input gradient (no weight gradient)
///             + 6·P_trainable_active       adapter linears and router: 2 forward + 2 input grad + 2 weight grad
///             + 12·Σ_l T_l·H·Dh            attention scores QKᵀ and PV: 4·T·H·Dh forward, twice that backward
/// </code>
/// with T_l = min(T, sliding window of layer l), counted over the full T×T square as in PaLM's MFU
/// (causal masking is not subtracted). The frozen FFN counts once per token, the MixLoRA experts K times
/// (K = top_k): the math the adapter needs, not what a particular kernel layout executes.
/// </summary>
public static class FlopModel
{
    public const string Formula = "4*P_frozen_matmul + 6*P_trainable_active + 12*sum_l(min(T,window_l))*H*Dh per token";

    public static double PerToken(ModelConfig model, ParameterCount p, int seqLen)
    {
        double attention = 0;
        for (var l = 0; l < model.NumLayers; l++)
        {
            var span = Math.Min(seqLen, model.SlidingWindowFor(l) ?? seqLen);
            attention += 12.0 * span * model.NumHeads * model.HeadDim;
        }
        return (4.0 * p.FrozenMatmul) + (6.0 * p.TrainableActive) + attention;
    }
}
