using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Optim;
using MixLoRA.Trainer.Runtime;
using TrainableTensor = MixLoRA.GraphBuilder.Adapters.TrainableTensor;

namespace MixLoRA.Trainer.Training;

/// <summary>A device tensor pair: the current value and the buffer the next update is written to.</summary>
public sealed class DoubleBuffer(OrtValue current, OrtValue next)
{
    public OrtValue Current { get; private set; } = current;
    public OrtValue Next { get; private set; } = next;
    public void Swap() => (Current, Next) = (Next, Current);
}

/// <summary>
/// Trainable tensors, AdamW moments and gradients as flat fp32 vectors resident on the device for the
/// whole run. The gradient step reads each trainable tensor through a view (an OrtValue over the flat
/// buffer at its offset); the optimizer updates the flat vectors in one pass into the second buffers.
/// </summary>
public sealed class TrainState : IDisposable
{
    private readonly DeviceTensors _store;
    private readonly OrtRuntime _rt;
    private readonly Dictionary<OrtValue, Dictionary<string, OrtValue>> _views = [];

    public TrainState(DeviceTensors store, OrtRuntime rt, IReadOnlyList<TrainableTensor> trainable)
    {
        (_store, _rt, Trainable) = (store, rt, trainable);
        Layout = TrainGraphs.Layout(trainable.Select(t => (t.Key, t.Shape)));
        Count = Layout.Count == 0 ? 0 : Layout[^1].Offset + Layout[^1].Count;
        // views are made through ORT's Span accessor, which is limited to 2 GiB
        MixLoRA.GraphBuilder.Fail.If(Count * 4 > int.MaxValue, $"{Count:N0} trainable parameters (> 2 GiB in fp32) in one flat buffer",
            "use a smaller rank or fewer experts/targets; splitting the flat buffer is not implemented yet");
    }

    public IReadOnlyList<TrainableTensor> Trainable { get; }
    public IReadOnlyList<(string Key, long Offset, long Count)> Layout { get; }
    public long Count { get; }
    public DoubleBuffer Params { get; private set; } = null!;
    public DoubleBuffer M { get; private set; } = null!;
    public DoubleBuffer V { get; private set; } = null!;
    public DoubleBuffer Grads { get; private set; } = null!;

    public void Load(AdapterWeights weights, AdapterWeights? m = null, AdapterWeights? v = null)
    {
        Params = Pair(Flatten(weights));
        M = Pair(m is null ? new float[Count] : Flatten(m));
        V = Pair(v is null ? new float[Count] : Flatten(v));
        Grads = new DoubleBuffer(_store.Allocate(DType.Float32, [Count]), _store.Allocate(DType.Float32, [Count]));
    }

    private float[] Flatten(AdapterWeights w)
    {
        var flat = new float[Count];
        foreach (var (key, offset, count) in Layout) w[key].Data.AsSpan(0, (int)count).CopyTo(flat.AsSpan((int)offset));
        return flat;
    }

    private DoubleBuffer Pair(float[] data) => new(_store.Upload(HostTensor.Of(data, Count)), _store.Allocate(DType.Float32, [Count]));

    /// <summary>Per-tensor views of the current trainable values (created once per buffer).</summary>
    public IReadOnlyDictionary<string, OrtValue> ParamViews() => Views(Params.Current);

    /// <summary>Per-tensor views of a flat buffer (params or gradients), created once per buffer.</summary>
    public IReadOnlyDictionary<string, OrtValue> Views(OrtValue buffer)
    {
        if (_views.TryGetValue(buffer, out var views)) return views;
        views = [];
        var basePtr = Address(buffer);
        foreach (var ((key, offset, count), t) in Layout.Zip(Trainable))
        {
            views[key] = OrtValue.CreateTensorValueWithData(_rt.DeviceMemory, Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float, t.Shape, basePtr + (nint)(offset * 4), count * 4);
        }
        _views[buffer] = views;
        return views;
    }

    private static unsafe nint Address(OrtValue v) => (nint)Unsafe(v.GetTensorMutableRawData());

    private static unsafe void* Unsafe(Span<byte> span) => System.Runtime.CompilerServices.Unsafe.AsPointer(ref MemoryMarshal.GetReference(span));

    /// <summary>Current values of one kind of state on the host, split by tensor in reference key order.</summary>
    public AdapterWeights Download(DoubleBuffer which)
    {
        var flat = _store.Download(which.Current).Floats();
        var w = new AdapterWeights();
        foreach (var ((key, offset, count), t) in Layout.Zip(Trainable)) w.Set(key, t.Shape, flat.AsSpan((int)offset, (int)count).ToArray());
        return w;
    }

    /// <summary>Binds the flat vectors for the optimizer step; its outputs go to the Next buffers.</summary>
    public void BindOptimizer(Dictionary<string, OrtValue> inputs, Dictionary<string, OrtValue> outputs)
    {
        const string p = TrainGraphs.FlatParams;
        inputs[p] = Params.Current;
        inputs[AdamW.GradName(p)] = Grads.Current;
        inputs[AdamW.MName(p)] = M.Current;
        inputs[AdamW.VName(p)] = V.Current;
        outputs[AdamW.NewName(p)] = Params.Next;
        outputs[AdamW.MNewName(p)] = M.Next;
        outputs[AdamW.VNewName(p)] = V.Next;
    }

    public void SwapAfterOptimizer()
    {
        Params.Swap();
        M.Swap();
        V.Swap();
    }

    public void Dispose()
    {
        foreach (var views in _views.Values) foreach (var v in views.Values) v.Dispose();
        _views.Clear();
    }
}
