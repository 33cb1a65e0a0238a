namespace MixLoRA.GraphBuilder.Ops;

/// <summary>
/// The com.mixlora fused ops a training graph may use: the caller sets those the trainer's runtime has kernels
/// for on the target device and compute dtype (export graphs never contain them).
/// </summary>
[Flags]
public enum FusedOps
{
    None = 0,

    /// <summary>MixLoRA's expert activations and slot mix (<see cref="SwiGluSlotsOps"/>).</summary>
    SwiGluSlots = 1,

    /// <summary>The loss per row (<see cref="CrossEntropyOps"/>).</summary>
    CrossEntropy = 2,

    /// <summary>Each slot's expert LoRA, gathered per slot instead of masked over all experts (<see cref="SlotLoraOps"/>).</summary>
    SlotLora = 4,

    /// <summary>The optimizer's AdamW update, one pass per chunk (<see cref="AdamWOps"/>; the optimizer graph, not the grad step).</summary>
    AdamW = 8,

    All = SwiGluSlots | CrossEntropy | SlotLora | AdamW,
}
