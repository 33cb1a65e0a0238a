using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Optim;
using TrainableTensor = MixLoRA.GraphBuilder.Adapters.TrainableTensor;
using MixLoRA.Trainer.Runtime;

namespace MixLoRA.Trainer.Training;

/// <summary>A device tensor pair: the current value and the buffer the next update is written to.</summary>
public sealed class DoubleBuffer(OrtValue current, OrtValue next)
{
    public OrtValue Current { get; private set; } = current;
    public OrtValue Next { get; private set; } = next;
    public void Swap() => (Current, Next) = (Next, Current);
}

/// <summary>
/// Trainable tensors, AdamW moments and gradient buffers, resident on the device for the whole run and
/// bound by name to the step sessions (no per-step host copies of state).
/// </summary>
public sealed class TrainState(DeviceTensors store, IReadOnlyList<TrainableTensor> trainable)
{
    public IReadOnlyList<TrainableTensor> Trainable { get; } = trainable;
    public Dictionary<string, DoubleBuffer> Params { get; } = [];
    public Dictionary<string, DoubleBuffer> M { get; } = [];
    public Dictionary<string, DoubleBuffer> V { get; } = [];
    public Dictionary<string, DoubleBuffer> Grads { get; } = [];

    public void Load(AdapterWeights weights, AdapterWeights? m = null, AdapterWeights? v = null)
    {
        foreach (var t in Trainable)
        {
            Params[t.Key] = Pair(weights[t.Key].Data, t.Shape);
            M[t.Key] = Pair(m?[t.Key].Data ?? new float[t.Count], t.Shape);
            V[t.Key] = Pair(v?[t.Key].Data ?? new float[t.Count], t.Shape);
            Grads[t.Key] = new DoubleBuffer(store.Allocate(DType.Float32, t.Shape), store.Allocate(DType.Float32, t.Shape));
        }
    }

    private DoubleBuffer Pair(float[] data, long[] shape) =>
        new(store.Upload(HostTensor.Of(data, shape)), store.Allocate(DType.Float32, shape));

    /// <summary>Current values of one kind of state on the host, in the reference key order.</summary>
    public AdapterWeights Download(Dictionary<string, DoubleBuffer> which)
    {
        var w = new AdapterWeights();
        foreach (var t in Trainable) w.Set(t.Key, t.Shape, store.Download(which[t.Key].Current).Floats());
        return w;
    }

    /// <summary>Binds params (and moments) for the optimizer step; its outputs go to the Next buffers.</summary>
    public void BindOptimizer(Dictionary<string, OrtValue> inputs, Dictionary<string, OrtValue> outputs)
    {
        foreach (var t in Trainable)
        {
            inputs[t.Key] = Params[t.Key].Current;
            inputs[AdamW.GradName(t.Key)] = Grads[t.Key].Current;
            inputs[AdamW.MName(t.Key)] = M[t.Key].Current;
            inputs[AdamW.VName(t.Key)] = V[t.Key].Current;
            outputs[AdamW.NewName(t.Key)] = Params[t.Key].Next;
            outputs[AdamW.MNewName(t.Key)] = M[t.Key].Next;
            outputs[AdamW.VNewName(t.Key)] = V[t.Key].Next;
        }
    }

    public void SwapAfterOptimizer()
    {
        foreach (var t in Trainable)
        {
            Params[t.Key].Swap();
            M[t.Key].Swap();
            V[t.Key].Swap();
        }
    }
}
