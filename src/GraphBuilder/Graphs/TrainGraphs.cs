using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Autodiff;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Losses;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.GraphBuilder.Optim;

namespace MixLoRA.GraphBuilder.Graphs;

/// <summary>What a set of training graphs is compiled for.</summary>
/// <param name="Checkpointing">recompute each decoder layer's activations in the backward (activation checkpointing).</param>
/// <param name="Fused">the trainer's fused kernels the graphs may use (<see cref="FusedOps"/>): MixLoRA's expert
/// activations, the experts' per-slot LoRA and the loss; set only to what the trainer's runtime has kernels for
/// (<paramref name="Compute"/> on the target device).</param>
public sealed record TrainSpec(ModelConfig Model, AdapterConfig Adapter, Shapes Shapes, DType WeightType, DType Compute, bool Accumulate = false, bool Checkpointing = false, FusedOps Fused = FusedOps.None);

/// <summary>A compiled graph with its adapter's trainable tensors and the frozen weights it reads.</summary>
public sealed record CompiledGraph(Graph Graph, IReadOnlyList<Adapters.TrainableTensor> Trainable, IReadOnlyDictionary<string, Value> Weights);

/// <summary>
/// The gradient step and the eval step (docs/design.md §7). IO contract, inputs: `input_ids`, `attention_mask`
/// (record ids: 1, 2, … per packed record of a row, 0 on padding), `position_ids`, `labels` (B, T) int64, every
/// frozen weight (HF key), every trainable tensor (reference key, fp32), with accumulation `KEY.grad.acc`, and
/// with fused expert dropout `dropout_seed` (int64 scalar, a new value every micro-step). The grad step also
/// takes `lm_weight` and `aux_weight` (fp32 scalars): this micro-batch's share of the step's label tokens and of
/// its real tokens, so the micro-steps' losses and gradients sum to the step's (token-weighted, not a mean of
/// micro-batch means). Outputs: `loss`, `lm_loss`, `aux_loss` (weighted in the grad step), `valid_tokens` (fp32
/// scalars), `router_load` (L, E) (MixLoRA only), and `KEY.grad` (grad step: accumulated into `.grad.acc` when
/// present) or `logits` (B, T, V) fp32 (eval step).
/// </summary>
public static class TrainGraphs
{
    public const string Loss = "loss", LmLoss = "lm_loss", AuxLoss = "aux_loss", ValidTokens = "valid_tokens", RouterLoad = "router_load";
    public const string Labels = "labels", Logits = "logits", LmWeight = "lm_weight", AuxWeight = "aux_weight";

    public static string AccName(string key) => key + ".grad.acc";

    /// <summary>The flat trainable vector the optimizer graph updates (names per <see cref="AdamW"/>).</summary>
    public const string FlatParams = "trainable";

    /// <summary>
    /// Gradient step: `KEY.grad` per trainable tensor (plus `KEY.grad.acc` with accumulation). The trainer
    /// binds these to views of one flat gradient buffer, so the optimizer updates everything in one pass
    /// with no Concat (a 1,254-input CUDA Concat cost 1.1 s per step on TinyLlama-shape MixLoRA).
    /// </summary>
    public static CompiledGraph GradStep(TrainSpec spec)
    {
        var (b, adapter, loss, weights) = Forward("grad_step", spec, withTraining: true);
        var parameters = adapter.Params.Inputs;
        var grads = Gradients.Emit(b, loss, parameters, recompute: spec.Checkpointing);
        foreach (var p in parameters)
        {
            var g = b.Cast(grads[p.Name], DType.Float32);
            if (spec.Accumulate) g = b.Add(b.Input(AccName(p.Name), DType.Float32, p.Shape), g);
            b.Output(g, AdamW.GradName(p.Name));
        }
        return Compile(b, adapter, weights);
    }

    /// <summary>Offsets of each trainable tensor in the flat vectors, in trainable order.</summary>
    public static IReadOnlyList<(string Key, long Offset, long Count)> Layout(IEnumerable<(string Key, long[] Shape)> trainable)
    {
        var list = new List<(string, long, long)>();
        long at = 0;
        foreach (var (key, shape) in trainable)
        {
            var n = shape.Aggregate(1L, (a, c) => a * c);
            list.Add((key, at, n));
            at += n;
        }
        return list;
    }

    public static CompiledGraph EvalStep(TrainSpec spec)
    {
        var (b, adapter, _, weights) = Forward("eval_step", spec, withTraining: false);
        return Compile(b, adapter, weights);
    }

    private static CompiledGraph Compile(Builder b, AdapterGraph adapter, IReadOnlyDictionary<string, Value> weights) =>
        new(b.Build(), adapter.Params.Tensors, weights);

    private static (Builder B, AdapterGraph Adapter, Value Loss, IReadOnlyDictionary<string, Value> Weights) Forward(string name, TrainSpec spec, bool withTraining)
    {
        var b = new Builder(name);
        // the grad step always trains: a constant, not an input (a bool input the Dropout kernels read on the
        // host forced a device-to-host copy, a stream sync, every step, and blocked CUDA graph capture)
        var training = withTraining ? b.Scalar(1, DType.Bool) : null;
        var adapter = new AdapterGraph(spec.Adapter, spec.Compute, training, spec.Fused);
        var start = ForwardGraph.Start(b, spec.Model, spec.Shapes, spec.WeightType, spec.Compute, adapter, packed: true);
        var labels = b.Input(Labels, DType.Int64, spec.Shapes.MicroBatch, spec.Shapes.SeqLen);
        var (lm, valid) = CausalLmLoss.Emit(b, start.Outputs.Logits, labels, fused: spec.Fused.HasFlag(FusedOps.CrossEntropy));
        var aux = adapter.AuxLoss(b) ?? b.Scalar(0, DType.Float32);
        if (withTraining)
        {
            // this micro-batch's shares of the step's label and real tokens: the micro-steps sum to the step
            lm = b.Mul(lm, b.Input(LmWeight, DType.Float32, Shape.Scalar));
            aux = b.Mul(aux, b.Input(AuxWeight, DType.Float32, Shape.Scalar));
        }
        var loss = b.Add(lm, aux);
        b.Output(loss, Loss);
        b.Output(lm, LmLoss);
        b.Output(aux, AuxLoss);
        b.Output(valid, ValidTokens);
        if (adapter.Routings.Count > 0) b.Output(Load(b, adapter, adapter.TokenMask!), RouterLoad);
        if (!withTraining)
        {
            var logits = b.Reshape(b.Cast(start.Outputs.Logits, DType.Float32), spec.Shapes.MicroBatch, spec.Shapes.SeqLen, spec.Model.VocabSize);
            b.Output(logits, Logits);
        }
        return (b, adapter, loss, start.Weights.Declared);
    }

    /// <summary>(L, E): per layer, the fraction of real tokens' routing slots that chose each expert (padding masked).</summary>
    internal static Value Load(Builder b, AdapterGraph adapter, Value tokenMask)
    {
        var real = b.Unsqueeze(tokenMask, 1, 2);                                                           // (N, 1, 1)
        var e = adapter.Config.NumExperts;
        var experts = b.Ints(Enumerable.Range(0, e).Select(i => (long)i).ToArray());
        var rows = adapter.Routings.Select(r =>
        {
            var onehot = b.Cast(b.Equal(b.Unsqueeze(r.Experts, 2), experts), DType.Float32);          // (N, K, E)
            var used = b.Mul(b.Unsqueeze(r.Selected, 2), real);                                         // (N, K, 1)
            var perExpert = b.ReduceSum(b.Mul(onehot, used), [0, 1]);                                   // (E)
            return b.Unsqueeze(b.Div(perExpert, b.Max(b.ReduceSum(perExpert), b.Scalar(1, DType.Float32))), 0);
        }).ToArray();
        return b.Concat(0, rows);                                                                        // (L, E)
    }
}
