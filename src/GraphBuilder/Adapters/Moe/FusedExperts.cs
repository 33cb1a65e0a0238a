using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>
/// The experts with the trainer's SwiGluSlots kernel (SiLU, gate and up targeted, no DoRA, ≤ 8 slots):
/// silu(G + ΔG_j) ⊙ (U + ΔU_j) and Σ_j w_j h_j are one <see cref="SwiGluSlotsOps"/> node each way instead of
/// the broadcasts, activation and slot sum. With lora_dropout while training, its h comes out dropped for the
/// down projection's LoRA (an in-kernel mask, seeded by the <see cref="SwiGluSlotsOps.SeedInput"/> input).
/// </summary>
internal sealed class FusedExperts(MoeContext c, ExpertLoras loras) : ExpertFfn(c, loras)
{
    protected override bool Dropped => true;

    protected override (Value H, Value? Mixed) Activate(Builder b, MlpSite site, Value g, Value u, Value? dg, Value? du, Routing routing)
    {
        if (dg is null || du is null) throw Fail.Bug($"the fused experts of {site.Key} need gate and up deltas");
        var ratio = C.Training is null || !Cfg.Targets("down_proj") ? 0 : C.S.LoraDropout;
        var seed = ratio > 0 ? b.InputOnce(SwiGluSlotsOps.SeedInput, DType.Int64, Shape.Scalar) : null;
        var (h, mixed) = b.SwiGluSlots(g, u, dg, du, routing.Weights, seed, ratio, site.Layer);   // (N, K, F), (N, F)
        return (h, mixed);
    }
}
