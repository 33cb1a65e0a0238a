using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>What every implementation of a MoE block's experts shares: the config, the trainables, the compute dtype, the training switch.</summary>
internal sealed record MoeContext(AdapterConfig Cfg, TrainableSet Trainables, DType Compute, Value? Training)
{
    public LoraSettings S => Cfg.Experts;
}

/// <summary>
/// The experts' LoRA pairs of one MoE block, used per routing slot. Experts' A/B are stacked, A* [E·R, in] and
/// B* [out, E·R]; slot j's delta s B_{e_j} A_{e_j} v is either the rank-space activations v A*ᵀ masked to expert
/// e_j's R-block (the mask holds s) times B*ᵀ (composed), or, with <paramref name="slotKernel"/>, one
/// <see cref="SlotLoraOps"/> node that reads only that expert's R-blocks.
/// </summary>
internal sealed class ExpertLoras(MoeContext c, bool slotKernel)
{
    private LoraSettings S => c.S;

    /// <summary>Each slot's expert LoRA as SlotLora nodes instead of the rank-space mask.</summary>
    public bool SlotKernel => slotKernel;

    /// <summary>The slots' selector: the (N, K, E·R) block mask holding 0 or s, or with the kernel the (N, K) experts themselves.</summary>
    public Value Selector(Builder b, Routing routing) =>
        slotKernel ? routing.Experts : BlockMask(b, routing.Experts, c.Cfg.NumExperts, S.R, S.Scaling);

    /// <summary>Dropout of the experts' LoRA input (identity when lora_dropout is 0 or the graph does not train).</summary>
    public Value Dropout(Builder b, Value v) => LoraLayer.Dropout(b, v, S.LoraDropout, c.Training);

    /// <summary>
    /// B*ᵀ(mask ⊙ A* x) for every slot (s is in the mask): (N, K, out), or null when the projection is not targeted;
    /// with the kernel the selector is the (N, K) experts and each slot reads only its expert's blocks.
    /// </summary>
    public Value? Delta(Builder b, int layer, string module, Value x, Value sel, long inF, long outF)
    {
        if (!c.Cfg.Targets(module)) return null;
        if (slotKernel) return SlotDelta(b, layer, module, Dropout(b, x), sel, inF, outF);
        var e = c.Cfg.NumExperts;
        var a = Stacked(b, layer, module, "lora_A", inF, axis: 0);                          // (E·R, in)
        var bw = Stacked(b, layer, module, "lora_B", outF, axis: 1);                        // (out, E·R)
        var z = b.Unsqueeze(b.Linear(Dropout(b, x), a), 1);                                 // (N, 1, E·R)
        var zm = b.Mul(z, sel);                                                             // (N, K, E·R)
        var slots = sel.S[1].Value;
        var delta = b.Linear(b.Reshape(zm, -1, e * S.R), bw);                               // (N·K, out)
        return b.Reshape(delta, -1, slots, outF);                                           // (N, K, out) (s is in the mask)
    }

    /// <summary>s B_e A_e v for each slot's expert e (<paramref name="experts"/> (N, K)): (N, K, out), v (N, in) or (N, K, in).</summary>
    public Value SlotDelta(Builder b, int layer, string module, Value v, Value experts, long inF, long outF)
    {
        var a = Stacked(b, layer, module, "lora_A", inF, axis: 0);                          // (E·R, in)
        var bw = Stacked(b, layer, module, "lora_B", outF, axis: 1);                        // (out, E·R)
        return b.SlotLora(v, a, bw, experts, S.R, S.Scaling);                               // (N, K, out)
    }

    /// <summary>dropout(h) A2*ᵀ for every slot: (N, K, E·R), all experts' rank activations; <paramref name="dropped"/>: h is dropout(h) already.</summary>
    public Value DownRank(Builder b, int layer, Value h, long f, long slots, bool dropped = false)
    {
        var a2 = Stacked(b, layer, "down_proj", "lora_A", f, axis: 0);                     // (E·R, F)
        var hn = b.Reshape(dropped ? h : Dropout(b, h), -1, f);                             // (N·K, F)
        return b.Reshape(b.Linear(hn, a2), -1, slots, c.Cfg.NumExperts * S.R);
    }

    /// <summary>
    /// Experts' A (stacked on rows) or B (stacked on columns), each a reference-keyed fp32 input, stacked in
    /// fp32 and cast once: one Cast and one Concat (backward: one Cast, one Split) instead of one Cast per
    /// expert each way, about 1,800 fewer nodes per TinyLlama-shape step.
    /// </summary>
    public Value Stacked(Builder b, int layer, string module, string which, long other, int axis)
    {
        var parts = Enumerable.Range(0, c.Cfg.NumExperts).Select(i =>
        {
            var key = $"{MoeBlock.Key(layer)}.{module}.experts.{i}";
            var t = which == "lora_A" ? LoraLayer.A(key, S, other) : LoraLayer.B(key, S, other);
            return c.Trainables.Get(b, t, DType.Float32);
        }).ToArray();
        return b.Cast(b.Concat(axis, parts), c.Compute);                                    // (E·R, in) or (out, E·R)
    }

    /// <summary>
    /// (N, K, E·R) compute-dtype mask holding the LoRA scale s where column c belongs to slot j (c / R ==
    /// expert of slot j) and 0 elsewhere: scaling in rank space spares a pass over every (N, K, out) delta.
    /// </summary>
    private Value BlockMask(Builder b, Value experts, int e, int r, double scaling)
    {
        var owner = b.Ints(Enumerable.Range(0, e * r).Select(col => (long)(col / r)).ToArray());   // (E·R)
        return b.Scale(b.Cast(b.Equal(b.Unsqueeze(experts, 2), owner), c.Compute), scaling);         // (N, K, E·R)
    }
}
