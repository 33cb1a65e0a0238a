using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>The routed experts of a MoE block: y = Σ_j w_j E_{e_j}(x), (N, D), for the slots of a <see cref="Routing"/>.</summary>
internal interface IExpertFfn
{
    Value Forward(Builder b, MlpSite site, Value x, Routing routing);
}

/// <summary>
/// MixLoRA's experts with static shapes (docs/design.md §6), the math written once; the implementations
/// (<see cref="ComposedExperts"/>, <see cref="FusedExperts"/>, <see cref="DoraExperts"/>) differ only in how
/// they form the slots' activations and the down projection. Expert e is
/// E_e(x) = down_e(act(gate_e(x)) ⊙ up_e(x)), each projection the frozen W plus expert e's LoRA:
/// <code>
/// G = W1 x,  U = W3 x                              frozen, once per token           (N, F)
/// Δgate_j = s B1_e A1_e x,  Δup_j = s B3_e A3_e x  per slot j (expert e = e_j)      (N, K, F)
/// h_j = act(G + Δgate_j) ⊙ (U + Δup_j)                                              (N, K, F)
/// y = W2 (Σ_j w_j h_j) + Σ_j w_j s B2_e A2_e h_j   W2 linear and shared → runs once  (N, D)
/// </code>
/// </summary>
internal abstract class ExpertFfn(MoeContext c, ExpertLoras loras) : IExpertFfn
{
    protected MoeContext C => c;
    protected ExpertLoras Loras => loras;
    protected AdapterConfig Cfg => c.Cfg;

    /// <summary>Whether <see cref="Activate"/>'s h comes out with the down projection's LoRA dropout applied.</summary>
    protected virtual bool Dropped => false;

    public Value Forward(Builder b, MlpSite site, Value x, Routing routing)
    {
        var sel = loras.Selector(b, routing);                                             // mask (N, K, E·R) or experts (N, K)
        var (g, u) = FrozenGateUp(b, site, x);                                            // (N, F)
        var (dg, du) = GateUpDeltas(b, site, x, sel);                                     // (N, K, F) or null
        var (h, mixed) = Activate(b, site, g, u, dg, du, routing);                        // (N, K, F), Σ_j w_j h_j (N, F) or null
        var w = b.Cast(b.Unsqueeze(routing.Weights, 2), c.Compute);                      // (N, K, 1)
        return Down(b, site, h, mixed, w, sel);                                           // (N, D)
    }

    /// <summary>h_j = act(G + Δgate_j) ⊙ (U + Δup_j) per slot (N, K, F) and, where the implementation has it, Σ_j w_j h_j (N, F).</summary>
    protected abstract (Value H, Value? Mixed) Activate(Builder b, MlpSite site, Value g, Value u, Value? dg, Value? du, Routing routing);

    /// <summary>W2 Σ_j w_j h_j + Σ_j w_j s B2_e A2_e dropout(h_j) when down_proj is targeted: (N, D).</summary>
    protected virtual Value Down(Builder b, MlpSite site, Value h, Value? mixed, Value w, Value sel)
    {
        var slots = h.S[1].Value;
        mixed ??= b.Squeeze(b.SumSlices(b.Mul(h, w), 1, slots), 1);                       // (N, F)
        var y = site.Frozen("down_proj", mixed);                                          // (N, D)
        if (!Cfg.Targets("down_proj")) return y;
        if (loras.SlotKernel)
        {
            var hd = Dropped ? h : loras.Dropout(b, h);                                   // (N, K, F)
            var delta = loras.SlotDelta(b, site.Layer, "down_proj", hd, sel, site.Intermediate, site.Hidden);   // (N, K, D)
            return b.Add(y, b.Squeeze(b.SumSlices(b.Mul(delta, w), 1, slots), 1));        // (N, D)
        }
        var z = loras.DownRank(b, site.Layer, h, site.Intermediate, slots, Dropped);      // (N, K, E·R)
        var b2 = loras.Stacked(b, site.Layer, "down_proj", "lora_B", site.Hidden, axis: 1);   // (D, E·R)
        var zw = b.Squeeze(b.SumSlices(b.Mul(b.Mul(z, sel), w), 1, slots), 1);            // (N, E·R)
        return b.Add(y, b.Linear(zw, b2));                                                // (N, D) (s is in the mask)
    }

    /// <summary>The frozen gate and up outputs (N, F) each: two projections, or Phi-3's gate_up_proj split in half.</summary>
    private static (Value G, Value U) FrozenGateUp(Builder b, MlpSite site, Value x)
    {
        if (!site.FusedGateUp) return (site.Frozen("gate_proj", x), site.Frozen("up_proj", x));
        var gu = b.Split(site.Frozen("gate_up_proj", x), -1, site.Intermediate, site.Intermediate);
        return (gu[0], gu[1]);
    }

    /// <summary>
    /// The experts' gate and up deltas (N, K, F) each, or null where not targeted. Phi-3's experts hold one LoRA
    /// on gate_up_proj (B [2F, R], as the authors' phi3 path keys it): its delta splits into gate and up halves.
    /// </summary>
    private (Value? G, Value? U) GateUpDeltas(Builder b, MlpSite site, Value x, Value sel)
    {
        var (d, f) = (site.Hidden, site.Intermediate);
        if (!site.FusedGateUp) return (loras.Delta(b, site.Layer, "gate_proj", x, sel, d, f), loras.Delta(b, site.Layer, "up_proj", x, sel, d, f));
        if (loras.Delta(b, site.Layer, "gate_up_proj", x, sel, d, 2 * f) is not { } gu) return (null, null);
        var halves = b.Split(gu, -1, f, f);
        return (halves[0], halves[1]);
    }

    /// <summary>
    /// The implementation for one block, from the config, the model's MLP, the fused ops the runtime has kernels for
    /// in the compute dtype, and the number of slots: DoRA when the experts use it; the fused SwiGluSlots kernel for
    /// SiLU experts on gate and up with ≤ 8 slots; composed otherwise. The experts' LoRA run through the SlotLora
    /// kernel when it is among <paramref name="fused"/>, the compute is float32 and DoRA is off.
    /// </summary>
    public static IExpertFfn For(MoeContext c, MlpSite site, FusedOps fused, long slots)
    {
        Fail.If(site.FusedGateUp && c.S.UseDora, "DoRA on MixLoRA experts over a fused gate_up_proj", "set use_dora false for this model's experts");
        var loras = new ExpertLoras(c, fused.HasFlag(FusedOps.SlotLora) && !c.S.UseDora && c.Compute == DType.Float32);
        if (c.S.UseDora) return new DoraExperts(c, loras);
        return Fusable(c, site, fused, slots) ? new FusedExperts(c, loras) : new ComposedExperts(c, loras);
    }

    /// <summary>Whether the SwiGluSlots kernel computes this block: SiLU experts on gate and up, without DoRA, ≤ 8 slots.</summary>
    private static bool Fusable(MoeContext c, MlpSite site, FusedOps fused, long slots) =>
        fused.HasFlag(FusedOps.SwiGluSlots) && c.Compute != DType.Float64 && slots <= SwiGluSlotsOps.MaxSlots
        && (site.FusedGateUp ? c.Cfg.Targets("gate_up_proj") : c.Cfg.Targets("gate_proj") && c.Cfg.Targets("up_proj"))
        && (c.Cfg.ActFn ?? site.ActName) is "silu" or "swish";
}
