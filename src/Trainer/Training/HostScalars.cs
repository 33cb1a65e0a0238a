using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.Optim;
using MixLoRA.Trainer.Runtime;

namespace MixLoRA.Trainer.Training;

/// <summary>
/// The small per-step tensors that live in host memory: losses, router load, grad norm, and the
/// optimizer's step / lr / grad_scale scalars. ORT copies them to and from the device as needed.
/// </summary>
internal sealed class HostScalars : IDisposable
{
    private readonly Dictionary<string, float[]> _arrays = new(StringComparer.Ordinal);
    private readonly List<OrtValue> _owned = [];
    private readonly long[] _step = [0];
    private readonly float[] _lr = [0], _scale = [1];
    private readonly int _layers, _experts;

    public HostScalars(Manifest m)
    {
        var eval = m.Graphs["grad_step"].Outputs;
        foreach (var name in new[] { TrainGraphs.Loss, TrainGraphs.LmLoss, TrainGraphs.AuxLoss, TrainGraphs.ValidTokens }) StepOutputs[name] = Scalar(name);
        if (eval.FirstOrDefault(o => o.Name == TrainGraphs.RouterLoad) is { } rl)
        {
            (_layers, _experts) = ((int)rl.Shape[0], (int)rl.Shape[1]);
            _arrays[TrainGraphs.RouterLoad] = new float[_layers * _experts];
            StepOutputs[TrainGraphs.RouterLoad] = Own(OrtValue.CreateTensorValueFromMemory(_arrays[TrainGraphs.RouterLoad], [_layers, _experts]));
        }
        OptimizerOutputs[OptimizerGraph.GradNormOutput] = Scalar(OptimizerGraph.GradNormOutput);
        OptimizerInputs[AdamW.StepInput] = Own(OrtValue.CreateTensorValueFromMemory(_step, []));
        OptimizerInputs[AdamW.LrInput] = Own(OrtValue.CreateTensorValueFromMemory(_lr, []));
        OptimizerInputs[OptimizerGraph.GradScaleInput] = Own(OrtValue.CreateTensorValueFromMemory(_scale, []));
        True = Own(OrtValue.CreateTensorValueFromMemory(new[] { true }, []));
        False = Own(OrtValue.CreateTensorValueFromMemory(new[] { false }, []));
    }

    public Dictionary<string, OrtValue> StepOutputs { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, OrtValue> OptimizerInputs { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, OrtValue> OptimizerOutputs { get; } = new(StringComparer.Ordinal);
    public OrtValue True { get; }
    public OrtValue False { get; }
    public double GradNorm => _arrays[OptimizerGraph.GradNormOutput][0];

    public double Value(string name) => _arrays[name][0];

    public void SetOptimizer(long step, double lr, double gradScale) => (_step[0], _lr[0], _scale[0]) = (step, (float)lr, (float)gradScale);

    /// <summary>Adds this micro-batch's losses (loss, lm, aux, tokens) and router load to the sums.</summary>
    public void Accumulate(double[] sums, ref double[,]? load)
    {
        sums[0] += Value(TrainGraphs.Loss);
        sums[1] += Value(TrainGraphs.LmLoss);
        sums[2] += Value(TrainGraphs.AuxLoss);
        sums[3] += Value(TrainGraphs.ValidTokens);
        if (_layers == 0) return;
        load ??= new double[_layers, _experts];
        var a = _arrays[TrainGraphs.RouterLoad];
        for (var l = 0; l < _layers; l++) for (var e = 0; e < _experts; e++) load[l, e] += a[(l * _experts) + e];
    }

    /// <summary>A host buffer for an output the caller does not read (eval logits).</summary>
    public OrtValue Scratch(BoundSession s, string name)
    {
        if (_scratch.TryGetValue(name, out var v)) return v;
        var shape = s.Session.OutputMetadata[name].Dimensions.Select(d => (long)d).ToArray();
        v = Own(OrtValue.CreateTensorValueFromMemory(new float[shape.Aggregate(1L, (a, b) => a * b)], shape));
        _scratch[name] = v;
        return v;
    }

    private readonly Dictionary<string, OrtValue> _scratch = new(StringComparer.Ordinal);

    private OrtValue Scalar(string name)
    {
        _arrays[name] = new float[1];
        return Own(OrtValue.CreateTensorValueFromMemory(_arrays[name], []));
    }

    private OrtValue Own(OrtValue v)
    {
        _owned.Add(v);
        return v;
    }

    public void Dispose()
    {
        foreach (var v in _owned) v.Dispose();
    }
}
