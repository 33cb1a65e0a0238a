using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Graphs;

/// <summary>Static batch shape of a compiled graph.</summary>
public sealed record Shapes(int MicroBatch, int SeqLen);

/// <summary>
/// The forward (scoring / eval) graph: inputs `input_ids`, `attention_mask` (B, T) int64 and every frozen
/// weight under its HF key; output `logits` (B, T, V) float32 (+ adapter outputs such as router logits).
/// Position ids are 0..T−1 per row (right padding), as transformers uses when none are given. The training
/// graphs (<c>packed: true</c>) take `position_ids` (B, T) as an input and read `attention_mask` as record ids
/// (packed rows, see <see cref="DecoderInputs"/>).
/// </summary>
public static class ForwardGraph
{
    public const string InputIds = "input_ids", AttentionMask = "attention_mask", PositionIds = "position_ids";

    public sealed record Built(Builder Builder, Graph? Graph, InputWeights Weights, Value InputIds, Value AttentionMask, DecoderOutputs Outputs);

    /// <summary>Declares the IO and builds the decoder; the caller may add losses before <see cref="Builder.Build"/>.</summary>
    public static Built Start(Builder b, ModelConfig cfg, Shapes shapes, DType weightType, DType compute, IAdapter? adapter = null, bool packed = false)
    {
        var (bsz, t) = (shapes.MicroBatch, shapes.SeqLen);
        var ids = b.Input(InputIds, DType.Int64, bsz, t);                                  // (B, T)
        var mask = b.Input(AttentionMask, DType.Int64, bsz, t);                            // (B, T)
        var positions = packed ? b.Input(PositionIds, DType.Int64, bsz, t)
            : b.Refine(b.Expand(b.Unsqueeze(b.Range(b.Int(0), b.Int(t), b.Int(1)), 0), bsz, t), Shape.Of(bsz, t));   // (B, T)
        var weights = new InputWeights(weightType);
        var outs = new Decoder(cfg, weights, adapter).Build(b, new DecoderInputs(ids, mask, positions, Segments: packed), compute);
        return new Built(b, null, weights, ids, mask, outs);
    }

    /// <summary>Scoring graph: logits (B, T, V) in float32.</summary>
    public static Built Logits(ModelConfig cfg, Shapes shapes, DType weightType, DType compute, IAdapter? adapter = null)
    {
        var s = Start(new Builder("forward"), cfg, shapes, weightType, compute, adapter);
        var b = s.Builder;
        var logits = b.Reshape(b.Cast(s.Outputs.Logits, DType.Float32), shapes.MicroBatch, shapes.SeqLen, cfg.VocabSize);   // (B, T, V)
        b.Output(logits, "logits");
        return s with { Graph = b.Build() };
    }
}
