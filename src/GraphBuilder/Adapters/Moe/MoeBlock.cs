using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>
/// The MixLoRA FFN block (docs/design.md §6): the router picks K slots per token (<see cref="Router"/>; mixlora-switch:
/// <see cref="SwitchRouting"/>), the experts (<see cref="ExpertFfn"/>: composed, fused or DoRA, chosen per block from
/// the config, the model's MLP, the fused ops and the dtype) compute Σ_j w_j E_{e_j}(x).
/// <code>
/// x ─┬─ router(fp32) ─ top-k ─ (experts, weights) ─────────────────────────┐
///    ├─ G = W1 x ──┬─ act(G + sΔgate_j) ⊙ (U + sΔup_j) = h_j ─ Σ_j w_j h_j ─ W2 ─(+)─ out
///    ├─ U = W3 x ──┘        ↑ masked x A*ᵀ B*ᵀ           └─ Σ_j w_j s B2_e A2_e h_j ─┘
/// </code>
/// </summary>
/// <param name="fused">the fused ops to emit where they apply (SwiGluSlots: SiLU, gate and up targeted, no DoRA; SlotLora:
/// no DoRA, float32); the caller sets only those the runtime has kernels for in <paramref name="compute"/>.</param>
internal sealed class MoeBlock(AdapterConfig cfg, TrainableSet trainables, DType compute, Value? training, FusedOps fused = FusedOps.None)
{
    private readonly MoeContext _c = new(cfg, trainables, compute, training);

    public (Value Out, Routing Routing) Build(Builder b, MlpSite site, Value x)
    {
        var jittered = Jitter(b, x);
        if (!cfg.IsSwitch) x = jittered;                                                   // switch: the router's input only
        var gate = trainables.Get(b, new TrainableTensor($"{Key(site.Layer)}.moe_gate.weight", [cfg.NumExperts, site.Hidden], Init.Gaussian, cfg.RouterInitRange), DType.Float32);
        var routing = cfg.IsSwitch ? SwitchRouting.Route(b, jittered, gate, cfg, site) : Router.Route(b, x, gate, cfg);
        var experts = ExpertFfn.For(_c, site, fused, routing.Experts.S[-1].Value);       // K slots (E for dynamic, 1 for switch)
        var y = experts.Forward(b, site, x, routing);                                     // (N, D)
        if (routing.Passthrough is { } pass) y = b.Add(y, b.Mul(b.Cast(pass, compute), x));   // switch: tokens over capacity
        return (LoraLayer.Dropout(b, y, cfg.FfnDropout, training), routing);
    }

    /// <summary>
    /// The reference's jitter: while training, x ⊙ U(1 − j, 1 + j) feeds the router and the experts of this
    /// block (mixlora-switch: the router only, as MoE-PEFT's SwitchSparseMoe.route jitters a copy); x unchanged
    /// when jitter_noise is 0, at eval (training false) and in graphs without training.
    /// </summary>
    private Value Jitter(Builder b, Value x)
    {
        if (cfg.JitterNoise <= 0 || training is null) return x;
        var j = cfg.JitterNoise;
        var noise = b.RandomUniformLike(b.StopGradient(x), 1 - j, 1 + j);              // only x's shape is used
        return b.Mul(x, b.Where(training, noise, b.Scalar(1, x.DType)));
    }

    public static string Key(int layer) => $"mixlora.layers.{layer}.mlp";
}
