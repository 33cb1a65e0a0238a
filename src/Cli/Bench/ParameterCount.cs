using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.Models;

namespace MixLoRA.Cli.Bench;

/// <summary>
/// Parameter counts of a compiled training graph. <see cref="Trainable"/>: every adapter tensor;
/// <see cref="TrainableActive"/>: those a token uses (MixLoRA and MoLA: attention LoRA, routers, and top_k of the
/// num_experts experts, mixlora-switch one; LoRA, LoRAMoE and HydraLoRA, which mix every expert or head: all);
/// <see cref="Frozen"/>: every frozen weight; <see cref="FrozenMatmul"/>:
/// the frozen weights a token multiplies with (the 2-D ones except the embedding table, which is a lookup,
/// unless it is also the tied lm_head).
/// </summary>
public sealed record ParameterCount(long Trainable, long TrainableActive, long Frozen, long FrozenMatmul)
{
    public static ParameterCount Of(CompiledGraph g, ModelConfig model, AdapterConfig adapter)
    {
        long trainable = 0, active = 0, frozen = 0, matmul = 0;
        // mixlora-dynamic keeps every expert's slot (K = E) in the static graph; LoRAMoE and HydraLoRA are dense
        var sparse = (adapter.IsMixLora || adapter.PeftType == "MOLA") && adapter.TopK > 0;
        var expertShare = sparse ? (double)adapter.TopK / adapter.NumExperts : 1.0;
        foreach (var t in g.Trainable)
        {
            trainable += t.Count;
            active += t.Key.Contains(".experts.", StringComparison.Ordinal) ? (long)Math.Round(t.Count * expertShare) : t.Count;
        }
        foreach (var (key, v) in g.Weights)
        {
            var n = v.S.Count;
            frozen += n;
            var lookupOnly = key == "model.embed_tokens.weight" && !model.TieWordEmbeddings;
            if (v.S.Rank == 2 && !lookupOnly) matmul += n;
        }
        return new ParameterCount(trainable, active, frozen, matmul);
    }
}
