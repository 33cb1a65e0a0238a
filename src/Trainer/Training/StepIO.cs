using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Optim;
using MixLoRA.Runtime;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Data;

namespace MixLoRA.Trainer.Training;

/// <summary>
/// The small per-step tensors: batch ids/mask/labels, losses, router load, grad norm, and the
/// optimizer's step / lr / grad_scale. All live on the device (every bound tensor does; mixing host
/// tensors into a CUDA IoBinding is avoided) and are copied in or read back explicitly.
/// </summary>
internal sealed class StepIO
{
    private readonly DeviceTensors _store;
    private readonly Dictionary<string, float[]> _read = new(StringComparer.Ordinal);
    private readonly int _layers, _experts;

    public StepIO(DeviceTensors store, Manifest m)
    {
        _store = store;
        foreach (var name in new[] { TrainGraphs.Loss, TrainGraphs.LmLoss, TrainGraphs.AuxLoss, TrainGraphs.ValidTokens }) StepOutputs[name] = store.Allocate(DType.Float32, []);
        if (m.Graphs["grad_step"].Outputs.FirstOrDefault(o => o.Name == TrainGraphs.RouterLoad) is { } rl)
        {
            (_layers, _experts) = ((int)rl.Shape[0], (int)rl.Shape[1]);
            StepOutputs[TrainGraphs.RouterLoad] = store.Allocate(DType.Float32, [_layers, _experts]);
        }
        OptimizerOutputs[OptimizerGraph.GradNormOutput] = store.Allocate(DType.Float32, []);
        OptimizerInputs[AdamW.StepInput] = store.Allocate(DType.Int64, []);
        OptimizerInputs[AdamW.LrInput] = store.Allocate(DType.Float32, []);
        OptimizerInputs[OptimizerGraph.GradScaleInput] = store.Allocate(DType.Float32, []);
        if (m.Graphs["grad_step"].Inputs.Any(i => i.Name == GraphBuilder.Ops.SwiGluSlotsOps.SeedInput)) Seed = store.Allocate(DType.Int64, []);
        long[] shape = [m.MicroBatchSize, m.SeqLen];
        Batch = new Dictionary<string, OrtValue>(StringComparer.Ordinal)
        {
            ["input_ids"] = store.Allocate(DType.Int64, shape),
            ["attention_mask"] = store.Allocate(DType.Int64, shape),
            [ForwardGraph.PositionIds] = store.Allocate(DType.Int64, shape),
            [TrainGraphs.Labels] = store.Allocate(DType.Int64, shape),
        };
        Weights[TrainGraphs.LmWeight] = store.Allocate(DType.Float32, []);
        Weights[TrainGraphs.AuxWeight] = store.Allocate(DType.Float32, []);
    }

    public Dictionary<string, OrtValue> StepOutputs { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, OrtValue> OptimizerInputs { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, OrtValue> OptimizerOutputs { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, OrtValue> Batch { get; }

    /// <summary>The grad step's token shares of the step (`lm_weight`, `aux_weight`).</summary>
    public Dictionary<string, OrtValue> Weights { get; } = new(StringComparer.Ordinal);

    /// <summary>The grad step's dropout seed (fused kernels with dropout), or null when its graphs have none.</summary>
    public OrtValue? Seed { get; }

    /// <summary>
    /// Sets the fused dropout's seed for one micro-step: a function of the optimizer step and the micro-batch,
    /// so masks differ every micro-step and a resumed run draws the same ones.
    /// </summary>
    public void SetSeed(long step, int micro)
    {
        if (Seed != null) _store.CopyIn(MemoryMarshal.AsBytes(new[] { (step * 4096) + micro }.AsSpan()), Seed);
    }

    public double GradNorm => _store.Download(OptimizerOutputs[OptimizerGraph.GradNormOutput]).Floats()[0];

    public double Value(string name) => _read[name][0];

    /// <summary>Copies a micro-batch into the device batch tensors.</summary>
    public void Load(Batch b)
    {
        _store.CopyIn(MemoryMarshal.AsBytes(b.InputIds.AsSpan()), Batch["input_ids"]);
        _store.CopyIn(MemoryMarshal.AsBytes(b.AttentionMask.AsSpan()), Batch["attention_mask"]);
        _store.CopyIn(MemoryMarshal.AsBytes(b.PositionIds.AsSpan()), Batch[ForwardGraph.PositionIds]);
        _store.CopyIn(MemoryMarshal.AsBytes(b.Labels.AsSpan()), Batch[TrainGraphs.Labels]);
    }

    /// <summary>Sets this micro-batch's shares of the step's label tokens and real tokens.</summary>
    public void SetWeights(double lm, double aux)
    {
        _store.CopyIn(MemoryMarshal.AsBytes(new[] { (float)lm }.AsSpan()), Weights[TrainGraphs.LmWeight]);
        _store.CopyIn(MemoryMarshal.AsBytes(new[] { (float)aux }.AsSpan()), Weights[TrainGraphs.AuxWeight]);
    }

    public void SetOptimizer(long step, double lr, double gradScale)
    {
        _store.CopyIn(MemoryMarshal.AsBytes(new[] { step }.AsSpan()), OptimizerInputs[AdamW.StepInput]);
        _store.CopyIn(MemoryMarshal.AsBytes(new[] { (float)lr }.AsSpan()), OptimizerInputs[AdamW.LrInput]);
        _store.CopyIn(MemoryMarshal.AsBytes(new[] { (float)gradScale }.AsSpan()), OptimizerInputs[OptimizerGraph.GradScaleInput]);
    }

    /// <summary>Reads the step outputs back to the host after a run.</summary>
    public void ReadStepOutputs()
    {
        foreach (var (name, v) in StepOutputs) _read[name] = _store.Download(v).Floats();
    }

    /// <summary>
    /// Adds this micro-batch's losses (loss, lm, aux: already its weighted shares of the step's), its valid
    /// tokens, and its router load weighted by <paramref name="loadWeight"/> to the sums.
    /// </summary>
    public void Accumulate(double[] sums, ref double[,]? load, double loadWeight)
    {
        ReadStepOutputs();
        sums[0] += Value(TrainGraphs.Loss);
        sums[1] += Value(TrainGraphs.LmLoss);
        sums[2] += Value(TrainGraphs.AuxLoss);
        sums[3] += Value(TrainGraphs.ValidTokens);
        if (_layers == 0) return;
        load ??= new double[_layers, _experts];
        var a = _read[TrainGraphs.RouterLoad];
        for (var l = 0; l < _layers; l++) for (var e = 0; e < _experts; e++) load[l, e] += loadWeight * a[(l * _experts) + e];
    }

    /// <summary>A zero router load (null without a router): what a process that ran no micro-batch of a shared step adds.</summary>
    public double[,]? EmptyLoad() => _layers == 0 ? null : new double[_layers, _experts];

    /// <summary>A device buffer for an output the caller does not read (eval logits).</summary>
    public OrtValue Scratch(BoundSession s, string name)
    {
        if (_scratch.TryGetValue(name, out var v)) return v;
        var shape = s.Session.OutputMetadata[name].Dimensions.Select(d => (long)d).ToArray();
        v = _store.Allocate(DType.Float32, shape);
        _scratch[name] = v;
        return v;
    }

    private readonly Dictionary<string, OrtValue> _scratch = new(StringComparer.Ordinal);
}
