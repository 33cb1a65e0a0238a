using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>
/// The MixLoRA FFN with static shapes (docs/design.md §6). Experts' LoRA A/B are stacked, A* [E·R, in] and
/// B* [out, E·R]; for slot j the rank-space activations are masked to expert e_j's R-block, which gives
/// exactly B_{e_j} A_{e_j} x. The frozen gate/up run once per token, and because W2 is linear and
/// shared, Σ_j w_j W2 h_j = W2 Σ_j w_j h_j, so the frozen down projection also runs once per token.
/// With DoRA (use_dora in expert_lora) each slot's gate/up/down output is scaled per row by its expert's
/// m_e / ‖W + s·B_e A_e‖; the scale does not commute with the mixing, so with DoRA on down_proj the frozen
/// W2 runs per slot (N·K rows).
/// <code>
/// x ─┬─ router(fp32) ─ top-k ─ (experts, weights) ─────────────────────────┐
///    ├─ G = W1 x ──┬─ act(G + sΔgate_j) ⊙ (U + sΔup_j) = h_j ─ Σ_j w_j h_j ─ W2 ─(+)─ out
///    ├─ U = W3 x ──┘        ↑ masked x A*ᵀ B*ᵀ           └─ Σ_j w_j s B2_e A2_e h_j ─┘
/// </code>
/// With fused kernels (graphs for the trainer's runtime), act(G + ΔG_j) ⊙ (U + ΔU_j) and Σ_j w_j h_j are one
/// <see cref="SwiGluSlotsOps"/> node each way instead of the broadcasts, activation and slot sum above; with
/// <see cref="FusedOps.SlotLora"/> each slot's s B_e A_e v is one <see cref="SlotLoraOps"/> node that reads only its
/// expert's R-blocks instead of the mask and the GEMM over all E·R rank columns.
/// </summary>
/// <param name="fused">the fused ops to emit where they apply (SwiGluSlots: SiLU, gate and up targeted, no DoRA; SlotLora:
/// no DoRA, float32); the caller sets only those the runtime has kernels for in <paramref name="compute"/>.</param>
internal sealed class MoeBlock(AdapterConfig cfg, TrainableSet trainables, DType compute, Value? training, FusedOps fused = FusedOps.None)
{
    private LoraSettings S => cfg.Experts;

    /// <summary>Each slot's expert LoRA as SlotLora nodes instead of the rank-space mask (<see cref="FusedOps.SlotLora"/>).</summary>
    private bool SlotLoraOn => fused.HasFlag(FusedOps.SlotLora) && !S.UseDora && compute == DType.Float32;

    public (Value Out, Routing Routing) Build(Builder b, MlpSite site, Value x)
    {
        var (d, f, e, k) = (site.Hidden, site.Intermediate, cfg.NumExperts, cfg.TopK);
        x = Jitter(b, x);
        var gate = trainables.Get(b, new TrainableTensor($"{Key(site.Layer)}.moe_gate.weight", [e, d], Init.Gaussian, cfg.RouterInitRange), DType.Float32);
        var routing = Router.Route(b, x, gate, cfg);
        var slots = routing.Experts.S[-1].Value;                                          // K (or E for dynamic)
        // the slots' selector: the (N, K, E·R) block mask holding 0 or s, or with SlotLora the (N, K) experts themselves
        var sel = SlotLoraOn ? routing.Experts : BlockMask(b, routing.Experts, e, S.R, S.Scaling);
        Value Activate(Value v) => cfg.ActFn is null ? site.Act(v) : b.Act(cfg.ActFn, v);

        Fail.If(site.FusedGateUp && S.UseDora, "DoRA on MixLoRA experts over a fused gate_up_proj", "set use_dora false for this model's experts");
        if (Fusable(site, slots))
        {
            var (gf, uf) = FrozenGateUp(b, site, x);                                        // (N, F)
            var (dg0, du0) = GateUpDeltas(b, site, x, sel);
            var (dgf, duf) = (dg0!, du0!);                                                  // (N, K, F)
            // H comes out dropped for the down-projection LoRA when training with lora_dropout (an in-kernel mask)
            var ratio = training is null || !cfg.Targets("down_proj") ? 0 : S.LoraDropout;
            var seed = ratio > 0 ? b.InputOnce(SwiGluSlotsOps.SeedInput, DType.Int64, Shape.Scalar) : null;
            var (hf, mixedf) = b.SwiGluSlots(gf, uf, dgf, duf, routing.Weights, seed, ratio, site.Layer);   // (N, K, F), (N, F)
            var wf = b.Cast(b.Unsqueeze(routing.Weights, 2), compute);                     // (N, K, 1)
            return (Down(b, site, hf, mixedf, wf, sel, slots, dropped: true), routing);      // (N, D)
        }
        var onehot = S.UseDora ? OneHot(b, routing.Experts, e) : null;                 // (N, K, E) with DoRA
        var (g0, u0) = FrozenGateUp(b, site, x);
        var (g, u) = (b.Unsqueeze(g0, 1), b.Unsqueeze(u0, 1));                            // (N, 1, F)
        var (dgm, dum) = GateUpDeltas(b, site, x, sel);
        if (dgm is { } dg) g = Dora(b, site, "gate_proj", b.Add(g, dg), onehot, d, f);     // (N, K, F)
        if (dum is { } du) u = Dora(b, site, "up_proj", b.Add(u, du), onehot, d, f);
        var h = b.Mul(Activate(g), u);                                                    // (N, K|1, F)
        if (h.S[1].Value != slots) h = b.Add(h, b.Floats(new double[slots], compute, 1, slots, 1));   // (N, K, F)
        var w = b.Cast(b.Unsqueeze(routing.Weights, 2), compute);                         // (N, K, 1)
        if (onehot is not null && cfg.Targets("down_proj")) return (DoraDown(b, site, h, w, sel, onehot), routing);
        var mixed = b.Squeeze(b.SumSlices(b.Mul(h, w), 1, slots), 1);                        // (N, F)
        return (Down(b, site, h, mixed, w, sel, slots), routing);
    }

    /// <summary>Whether the fused kernels compute this block: SiLU experts on gate and up, without DoRA, ≤ 8 slots.</summary>
    private bool Fusable(MlpSite site, long slots) =>
        fused.HasFlag(FusedOps.SwiGluSlots) && compute != DType.Float64 && !S.UseDora && slots <= SwiGluSlotsOps.MaxSlots
        && (site.FusedGateUp ? cfg.Targets("gate_up_proj") : cfg.Targets("gate_proj") && cfg.Targets("up_proj"))
        && (cfg.ActFn ?? site.ActName) is "silu" or "swish";

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
        if (!site.FusedGateUp) return (Delta(b, site.Layer, "gate_proj", x, sel, d, f), Delta(b, site.Layer, "up_proj", x, sel, d, f));
        if (Delta(b, site.Layer, "gate_up_proj", x, sel, d, 2 * f) is not { } gu) return (null, null);
        var halves = b.Split(gu, -1, f, f);
        return (halves[0], halves[1]);
    }

    /// <summary>
    /// W2 mixed + Σ_j w_j s B2_e A2_e dropout(h_j) when down_proj is targeted: (N, D); <paramref name="dropped"/>:
    /// h is already dropout(h) (the fused kernel's).
    /// </summary>
    private Value Down(Builder b, MlpSite site, Value h, Value mixed, Value w, Value sel, long slots, bool dropped = false)
    {
        var y = site.Frozen("down_proj", mixed);                                          // (N, D)
        if (!cfg.Targets("down_proj")) return y;
        if (SlotLoraOn)
        {
            var hd = dropped ? h : LoraLayer.Dropout(b, h, S.LoraDropout, training);             // (N, K, F)
            var delta = SlotDelta(b, site.Layer, "down_proj", hd, sel, site.Intermediate, site.Hidden);   // (N, K, D)
            return b.Add(y, b.Squeeze(b.SumSlices(b.Mul(delta, w), 1, slots), 1));           // (N, D)
        }
        var z = DownRank(b, site.Layer, h, site.Intermediate, slots, dropped);           // (N, K, E·R)
        var b2 = Stacked(b, site.Layer, "down_proj", "lora_B", cfg.NumExperts, site.Hidden, S.R, axis: 1);   // (D, E·R)
        var zw = b.Squeeze(b.SumSlices(b.Mul(b.Mul(z, sel), w), 1, slots), 1);          // (N, E·R)
        return b.Add(y, b.Linear(zw, b2));                                                // (N, D) (s is in the mask)
    }

    /// <summary>dropout(h) A2*ᵀ for every slot: (N, K, E·R), all experts' rank activations.</summary>
    private Value DownRank(Builder b, int layer, Value h, long f, long slots, bool dropped = false)
    {
        var a2 = Stacked(b, layer, "down_proj", "lora_A", cfg.NumExperts, f, S.R, axis: 0);   // (E·R, F)
        var hn = b.Reshape(dropped ? h : LoraLayer.Dropout(b, h, S.LoraDropout, training), -1, f);   // (N·K, F)
        return b.Reshape(b.Linear(hn, a2), -1, slots, cfg.NumExperts * S.R);
    }

    /// <summary>
    /// The expert output with DoRA on down_proj: Σ_j w_j c_j ⊙ (W2 h_j + s B2_e A2_e h_j). The per-row scale
    /// differs per expert, so the frozen W2 runs per slot (N·K rows) instead of once per token.
    /// </summary>
    private Value DoraDown(Builder b, MlpSite site, Value h, Value w, Value mask, Value onehot)
    {
        var (d, f, e, slots) = (site.Hidden, site.Intermediate, cfg.NumExperts, h.S[1].Value);
        var frozen = b.Reshape(site.Frozen("down_proj", b.Reshape(h, -1, f)), -1, slots, d);   // (N, K, D)
        var zm = b.Mul(DownRank(b, site.Layer, h, f, slots), mask);                          // (N, K, E·R)
        var b2 = Stacked(b, site.Layer, "down_proj", "lora_B", e, d, S.R, axis: 1);         // (D, E·R)
        var delta = b.Reshape(b.Linear(b.Reshape(zm, -1, e * S.R), b2), -1, slots, d);     // s is in the mask
        var y = Dora(b, site, "down_proj", b.Add(frozen, delta), onehot, f, d);             // (N, K, D)
        return b.Squeeze(b.SumSlices(b.Mul(y, w), 1, slots), 1);                             // (N, D)
    }

    /// <summary>
    /// DoRA on one projection of the experts: v (N, K, out) = W x + s·B_e A_e x per slot, scaled by
    /// c_e = m_e / ‖W + s·B_e A_e‖_row (detached norm) of the slot's expert, picked with the one-hot (N, K, E)
    /// times the (E, out) table (no Gather: ORT's CUDA gather kernels failed on in-graph indices). v when DoRA is off.
    /// </summary>
    private Value Dora(Builder b, MlpSite site, string module, Value v, Value? onehot, long inF, long outF)
    {
        if (onehot is null) return v;
        var weight = site.Weight?.Invoke(module) ?? throw Fail.Bug($"DoRA on the experts' {module} needs the frozen weight of {site.Key}");
        var normType = compute == DType.Float64 ? DType.Float64 : DType.Float32;
        var rows = Enumerable.Range(0, cfg.NumExperts).Select(i =>
        {
            var key = $"{Key(site.Layer)}.{module}.experts.{i}";
            var m = trainables.Get(b, LoraLayer.Magnitude(key, S, $"{site.Key}.{module}.weight", outF), normType);
            var a = trainables.Get(b, LoraLayer.A(key, S, inF), normType);
            var bw = trainables.Get(b, LoraLayer.B(key, S, outF), normType);
            var norm = LoraLayer.WeightNorm(b, weight, a, bw, S.Scaling);                     // (out)
            return b.Unsqueeze(b.Div(b.Cast(m, norm.DType), norm), 0);                       // (1, out)
        }).ToArray();
        var table = b.Concat(0, rows);                                                        // (E, out)
        var c = b.MatMul(b.Cast(onehot, table.DType), table);                                 // (N, K, out)
        return b.Mul(v, b.Cast(c, compute));
    }

    /// <summary>(N, K, E) fp32 one-hot of each slot's expert.</summary>
    private static Value OneHot(Builder b, Value experts, int e) =>
        b.Cast(b.Equal(b.Unsqueeze(experts, 2), b.Ints(Enumerable.Range(0, e).Select(i => (long)i).ToArray())), DType.Float32);

    /// <summary>
    /// The reference's jitter: while training, x ⊙ U(1 − j, 1 + j) feeds the router and the experts of this
    /// block; x unchanged when jitter_noise is 0, at eval (training false) and in graphs without training.
    /// </summary>
    private Value Jitter(Builder b, Value x)
    {
        if (cfg.JitterNoise <= 0 || training is null) return x;
        var j = cfg.JitterNoise;
        var noise = b.RandomUniformLike(b.StopGradient(x), 1 - j, 1 + j);              // only x's shape is used
        return b.Mul(x, b.Where(training, noise, b.Scalar(1, x.DType)));
    }

    /// <summary>
    /// B*ᵀ(mask ⊙ A* x) for every slot (s is in the mask): (N, K, F), or null when the projection is not targeted;
    /// with <see cref="SlotLoraOn"/> the selector is the (N, K) experts and each slot reads only its expert's blocks.
    /// </summary>
    private Value? Delta(Builder b, int layer, string module, Value x, Value sel, long inF, long outF)
    {
        if (!cfg.Targets(module)) return null;
        if (SlotLoraOn) return SlotDelta(b, layer, module, LoraLayer.Dropout(b, x, S.LoraDropout, training), sel, inF, outF);
        var e = cfg.NumExperts;
        var a = Stacked(b, layer, module, "lora_A", e, inF, S.R, axis: 0);                // (E·R, in)
        var bw = Stacked(b, layer, module, "lora_B", e, outF, S.R, axis: 1);              // (out, E·R)
        var z = b.Unsqueeze(b.Linear(LoraLayer.Dropout(b, x, S.LoraDropout, training), a), 1);   // (N, 1, E·R)
        var zm = b.Mul(z, sel);                                                           // (N, K, E·R)
        var slots = sel.S[1].Value;
        var delta = b.Linear(b.Reshape(zm, -1, e * S.R), bw);                             // (N·K, out)
        return b.Reshape(delta, -1, slots, outF);                                         // (N, K, out) (s is in the mask)
    }

    /// <summary>s B_e A_e v for each slot's expert e (<paramref name="experts"/> (N, K)): (N, K, out), v (N, in) or (N, K, in).</summary>
    private Value SlotDelta(Builder b, int layer, string module, Value v, Value experts, long inF, long outF)
    {
        var a = Stacked(b, layer, module, "lora_A", cfg.NumExperts, inF, S.R, axis: 0);    // (E·R, in)
        var bw = Stacked(b, layer, module, "lora_B", cfg.NumExperts, outF, S.R, axis: 1);   // (out, E·R)
        return b.SlotLora(v, a, bw, experts, S.R, S.Scaling);                              // (N, K, out)
    }

    /// <summary>
    /// Experts' A (stacked on rows) or B (stacked on columns), each a reference-keyed fp32 input, stacked in
    /// fp32 and cast once: one Cast and one Concat (backward: one Cast, one Split) instead of one Cast per
    /// expert each way, about 1,800 fewer nodes per TinyLlama-shape step.
    /// </summary>
    private Value Stacked(Builder b, int layer, string module, string which, int e, long other, int r, int axis)
    {
        var parts = Enumerable.Range(0, e).Select(i =>
        {
            var key = $"{Key(layer)}.{module}.experts.{i}";
            var t = which == "lora_A" ? LoraLayer.A(key, S, other) : LoraLayer.B(key, S, other);
            return trainables.Get(b, t, DType.Float32);
        }).ToArray();
        return b.Cast(b.Concat(axis, parts), compute);                                    // (E·R, in) or (out, E·R)
    }

    /// <summary>
    /// (N, K, E·R) compute-dtype mask holding the LoRA scale s where column c belongs to slot j (c / R ==
    /// expert of slot j) and 0 elsewhere: scaling in rank space spares a pass over every (N, K, out) delta.
    /// </summary>
    private Value BlockMask(Builder b, Value experts, int e, int r, double scaling)
    {
        var owner = b.Ints(Enumerable.Range(0, e * r).Select(c => (long)(c / r)).ToArray());      // (E·R)
        return b.Scale(b.Cast(b.Equal(b.Unsqueeze(experts, 2), owner), compute), scaling);       // (N, K, E·R)
    }

    public static string Key(int layer) => $"mixlora.layers.{layer}.mlp";
}
