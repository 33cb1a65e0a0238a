using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Models;

/// <summary>
/// One named linear of the decoder (q_proj ... down_proj) as adapters see it; Weight is the frozen [out, in]
/// weight and Base the frozen output x Wᵀ (+ b) (null where the caller has none: DoRA needs both).
/// </summary>
public sealed record LinearSite(int Layer, string Module, string Key, long In, long Out, Value? Weight = null, Value? Base = null);

/// <summary>
/// The MLP block of one decoder layer as an adapter sees it: the frozen projections (without any adapter),
/// the activation, which tokens are real (for losses that must ignore padding), the frozen weights
/// [out, in] by module (null where the caller has none: DoRA on MixLoRA experts needs them) and the call's
/// input ids (B, T), whose shape tells a router where each sequence starts (mixlora-switch's capacity).
/// </summary>
public sealed record MlpSite(
    int Layer,
    string Key,                                  // "model.layers.3.mlp"
    long Hidden,                                 // D
    long Intermediate,                           // F
    Func<string, Value, Value> Frozen,           // (module, x (N, in)) → x Wᵀ (+b), no adapter
    Func<Value, Value> Act,                      // the model's hidden_act
    Value TokenMask,                             // (N) float 1 for real tokens, 0 for padding
    Func<string, Value>? Weight = null,          // module → frozen weight [out, in]
    string? ActName = null,                      // hidden_act by its HF name ("silu"), when known
    bool FusedGateUp = false,                    // gate and up are one gate_up_proj [2F, D] (Phi-3)
    Value? InputIds = null);                     // (B, T) int64, this call's ids

/// <summary>
/// Where adapters plug into the model without editing it: a delta on any named linear, and an optional
/// replacement of the whole MLP block (MixLoRA's MoE). Return null to keep the model's own computation.
/// </summary>
public interface IAdapter
{
    /// <summary>Δ(x) added to the frozen linear's output (N, out), or null.</summary>
    Value? LinearDelta(Builder b, LinearSite site, Value x);

    /// <summary>The MLP block's output (N, D) replacing the dense SwiGLU, or null.</summary>
    Value? Mlp(Builder b, MlpSite site, Value x);
}

/// <summary>No adapter: the base model.</summary>
public sealed class NoAdapter : IAdapter
{
    public static readonly NoAdapter Instance = new();
    public Value? LinearDelta(Builder b, LinearSite site, Value x) => null;
    public Value? Mlp(Builder b, MlpSite site, Value x) => null;
}
