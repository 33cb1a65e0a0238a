using System.Collections.Immutable;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Graphs;

/// <summary>
/// The inference graph shipped to ORT hosts (docs/design.md §8): the decoder with a KV cache and the conventional
/// IO names of HF/optimum and onnxruntime-genai exports, every dim symbolic.
/// <code>
/// input_ids (batch, sequence_length) int64          ┐
/// attention_mask (batch, total_sequence_length) int64├─ decoder ─┬─ logits (batch, sequence_length, vocab) float32
/// position_ids (batch, sequence_length) int64        │           └─ present.{i}.key / .value (batch, Hkv, total_sequence_length, Dh)
/// past_key_values.{i}.key / .value (batch, Hkv, past_sequence_length, Dh) ┘
/// </code>
/// Weights come from the <see cref="IWeightSource"/> (initializers for a self-contained model); adapter
/// tensors the adapter declares as graph inputs are handled by <see cref="BindAdapterTensors"/>.
/// </summary>
public static class ExportGraph
{
    public const string InputIds = "input_ids";
    public const string AttentionMask = "attention_mask";
    public const string PositionIds = "position_ids";
    public const string Logits = "logits";
    public const string PastKeyFormat = "past_key_values.%d.key";
    public const string PastValueFormat = "past_key_values.%d.value";
    public const string PresentKeyFormat = "present.%d.key";
    public const string PresentValueFormat = "present.%d.value";

    public static string PastKey(int layer) => $"past_key_values.{layer}.key";
    public static string PastValue(int layer) => $"past_key_values.{layer}.value";
    public static string PresentKey(int layer) => $"present.{layer}.key";
    public static string PresentValue(int layer) => $"present.{layer}.value";

    /// <summary>True for the names of the IO contract (everything else an input can be is a weight or adapter tensor).</summary>
    public static bool IsContractInput(string name) =>
        name is InputIds or AttentionMask or PositionIds || name.StartsWith("past_key_values.", StringComparison.Ordinal);

    /// <summary>
    /// Builds the graph. <paramref name="compute"/> is the dtype of activations and of the KV cache;
    /// <paramref name="addOutputs"/> may mark more values as outputs (e.g. router logits) before the snapshot.
    /// </summary>
    public static Graph Build(ModelConfig cfg, IWeightSource weights, DType compute, IAdapter? adapter = null, Action<Builder>? addOutputs = null)
    {
        var b = new Builder("decoder");
        var (batch, seq, total, past) = (Dim.Sym("batch"), Dim.Sym("sequence_length"), Dim.Sym("total_sequence_length"), Dim.Sym("past_sequence_length"));
        var ids = b.Input(InputIds, DType.Int64, batch, seq);
        var mask = b.Input(AttentionMask, DType.Int64, batch, total);
        var positions = b.Input(PositionIds, DType.Int64, batch, seq);
        var pastKv = new List<(Value K, Value V)>();
        for (var l = 0; l < cfg.NumLayers; l++)
        {
            pastKv.Add((b.Input(PastKey(l), compute, batch, cfg.NumKvHeads, past, cfg.HeadDim),
                        b.Input(PastValue(l), compute, batch, cfg.NumKvHeads, past, cfg.HeadDim)));
        }
        var outs = new Decoder(cfg, weights, adapter).Build(b, new DecoderInputs(ids, mask, positions, pastKv), compute);

        var bt = b.ShapeOf(ids);                                                                       // [B, T]
        var logits = b.Apply1(ShapeOps.ReshapeOp, [b.Cast(outs.Logits, DType.Float32), b.Concat(0, bt, b.Ints(cfg.VocabSize))]);
        b.Output(b.Refine(logits, Shape.Of(batch, seq, cfg.VocabSize)), Logits);                      // (B, T, V)
        for (var l = 0; l < cfg.NumLayers; l++)
        {
            var kvShape = Shape.Of(batch, cfg.NumKvHeads, total, cfg.HeadDim);
            b.Output(b.Refine(outs.Present[l].K, kvShape), PresentKey(l));
            b.Output(b.Refine(outs.Present[l].V, kvShape), PresentValue(l));
        }
        addOutputs?.Invoke(b);
        return b.Build();
    }

    /// <summary>
    /// Turns the graph inputs the adapter declared (everything that is not the IO contract nor already an
    /// initializer) into initializers from <paramref name="tensor"/>. With <paramref name="overridable"/> they
    /// stay graph inputs too (ONNX IR ≥ 4: an input with an initializer is a default a host may override,
    /// e.g. with an ORT LoRA adapter). Returns the graph and the bound tensors in input order.
    /// </summary>
    public static (Graph Graph, IReadOnlyList<TensorData> Bound) BindAdapterTensors(Graph g, Func<Value, TensorData> tensor, bool overridable)
    {
        var have = g.Initializers.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var bound = new List<TensorData>();
        foreach (var v in g.Inputs)
        {
            if (IsContractInput(v.Name) || have.Contains(v.Name)) continue;
            var t = tensor(v);
            var want = v.S.ToLongs();
            if (t.DType != v.DType || !t.Dims.SequenceEqual(want) || t.Name != v.Name)
            {
                throw Fail.Bug($"adapter tensor for '{v.Name}' is {t.Name} {t.DType.Name()}[{string.Join(", ", t.Dims)}], the graph needs {v.DType.Name()}[{string.Join(", ", want)}]");
            }
            bound.Add(t);
        }
        var names = bound.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var inputs = overridable ? g.Inputs : g.Inputs.Where(v => !names.Contains(v.Name)).ToImmutableArray();
        return (g with { Inputs = inputs, Initializers = g.Initializers.AddRange(bound) }, bound);
    }
}
