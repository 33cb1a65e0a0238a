using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>
/// The experts composed from ONNX ops: G and U broadcast over the slots, h_j = act(G + Δgate_j) ⊙ (U + Δup_j)
/// (N, K, F); any activation, any subset of targets, any dtype. <see cref="Project"/> is where DoRA scales each
/// slot's projection.
/// </summary>
internal class ComposedExperts(MoeContext c, ExpertLoras loras) : ExpertFfn(c, loras)
{
    protected override (Value H, Value? Mixed) Activate(Builder b, MlpSite site, Value g, Value u, Value? dg, Value? du, Routing routing)
    {
        var slots = routing.Experts.S[-1].Value;
        (g, u) = (b.Unsqueeze(g, 1), b.Unsqueeze(u, 1));                                  // (N, 1, F)
        if (dg is not null) g = Project(b, site, "gate_proj", b.Add(g, dg), routing);     // (N, K, F)
        if (du is not null) u = Project(b, site, "up_proj", b.Add(u, du), routing);
        var h = b.Mul(Activate(b, site, g), u);                                           // (N, K|1, F)
        if (h.S[1].Value != slots) h = b.Add(h, b.Floats(new double[slots], C.Compute, 1, slots, 1));   // (N, K, F)
        return (h, null);
    }

    /// <summary>A slot's gate or up output W x + s B_e A_e x (N, K, out) as the experts use it (DoRA rescales it).</summary>
    protected virtual Value Project(Builder b, MlpSite site, string module, Value v, Routing routing) => v;

    /// <summary>The experts' activation: act_fn, or the model's hidden_act.</summary>
    private Value Activate(Builder b, MlpSite site, Value v) => Cfg.ActFn is null ? site.Act(v) : b.Act(Cfg.ActFn, v);
}
