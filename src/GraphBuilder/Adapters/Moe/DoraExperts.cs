using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>
/// The experts with DoRA (use_dora in expert_lora): each slot's gate/up/down output is scaled per row by its
/// expert's c_e = m_e / ‖W + s·B_e A_e‖ (detached norm). The scale does not commute with the mixing, so with
/// DoRA on down_proj the frozen W2 runs per slot (N·K rows): Σ_j w_j c_j ⊙ (W2 h_j + s B2_e A2_e h_j).
/// One instance per block: it keeps the block's (N, K, E) fp32 one-hot of the slots' experts.
/// </summary>
internal sealed class DoraExperts(MoeContext c, ExpertLoras loras) : ComposedExperts(c, loras)
{
    private Value? _onehot;

    protected override (Value H, Value? Mixed) Activate(Builder b, MlpSite site, Value g, Value u, Value? dg, Value? du, Routing routing)
    {
        _onehot = b.Cast(b.Equal(b.Unsqueeze(routing.Experts, 2), b.Ints(Enumerable.Range(0, Cfg.NumExperts).Select(i => (long)i).ToArray())), DType.Float32);
        return base.Activate(b, site, g, u, dg, du, routing);                               // (N, K, E) one-hot first
    }

    protected override Value Project(Builder b, MlpSite site, string module, Value v, Routing routing) => Dora(b, site, module, v);

    protected override Value Down(Builder b, MlpSite site, Value h, Value? mixed, Value w, Value sel)
    {
        if (!Cfg.Targets("down_proj")) return base.Down(b, site, h, mixed, w, sel);
        var (d, f, e, slots) = (site.Hidden, site.Intermediate, Cfg.NumExperts, h.S[1].Value);
        var frozen = b.Reshape(site.Frozen("down_proj", b.Reshape(h, -1, f)), -1, slots, d);   // (N, K, D)
        var zm = b.Mul(Loras.DownRank(b, site.Layer, h, f, slots), sel);                      // (N, K, E·R)
        var b2 = Loras.Stacked(b, site.Layer, "down_proj", "lora_B", d, axis: 1);            // (D, E·R)
        var delta = b.Reshape(b.Linear(b.Reshape(zm, -1, e * C.S.R), b2), -1, slots, d);     // s is in the mask
        var y = Dora(b, site, "down_proj", b.Add(frozen, delta));                             // (N, K, D)
        return b.Squeeze(b.SumSlices(b.Mul(y, w), 1, slots), 1);                             // (N, D)
    }

    /// <summary>
    /// DoRA on one projection of the experts: v (N, K, out) = W x + s·B_e A_e x per slot, scaled by
    /// c_e = m_e / ‖W + s·B_e A_e‖_row (detached norm) of the slot's expert, picked with the one-hot (N, K, E)
    /// times the (E, out) table (no Gather: ORT's CUDA gather kernels failed on in-graph indices).
    /// </summary>
    private Value Dora(Builder b, MlpSite site, string module, Value v)
    {
        var onehot = _onehot ?? throw Fail.Bug("DoRA experts: the slots' one-hot is made in Activate");
        var (inF, outF) = module == "down_proj" ? (site.Intermediate, site.Hidden) : (site.Hidden, site.Intermediate);
        var weight = site.Weight?.Invoke(module) ?? throw Fail.Bug($"DoRA on the experts' {module} needs the frozen weight of {site.Key}");
        var normType = C.Compute == DType.Float64 ? DType.Float64 : DType.Float32;
        var rows = Enumerable.Range(0, Cfg.NumExperts).Select(i =>
        {
            var key = $"{MoeBlock.Key(site.Layer)}.{module}.experts.{i}";
            var m = C.Trainables.Get(b, LoraLayer.Magnitude(key, C.S, $"{site.Key}.{module}.weight", outF), normType);
            var a = C.Trainables.Get(b, LoraLayer.A(key, C.S, inF), normType);
            var bw = C.Trainables.Get(b, LoraLayer.B(key, C.S, outF), normType);
            var norm = LoraLayer.WeightNorm(b, weight, a, bw, C.S.Scaling);                    // (out)
            return b.Unsqueeze(b.Div(b.Cast(m, norm.DType), norm), 0);                          // (1, out)
        }).ToArray();
        var table = b.Concat(0, rows);                                                           // (E, out)
        var scale = b.MatMul(b.Cast(onehot, table.DType), table);                                // (N, K, out)
        return b.Mul(v, b.Cast(scale, C.Compute));
    }
}
