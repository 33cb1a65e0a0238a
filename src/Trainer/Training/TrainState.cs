using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Optim;
using MixLoRA.Runtime;
using TrainableTensor = MixLoRA.GraphBuilder.Adapters.TrainableTensor;

namespace MixLoRA.Trainer.Training;

/// <summary>
/// Gradient buffers for accumulation: the current sum and the buffer the next micro-step writes; the second
/// is allocated on first use, so steps of one micro-batch hold one gradient vector.
/// </summary>
public sealed class DoubleBuffer(OrtValue first, Func<OrtValue> makeSecond)
{
    private OrtValue? _second;
    private bool _firstIsCurrent = true;

    /// <summary>Whether the second buffer exists yet.</summary>
    public bool HasSecond => _second != null;
    public OrtValue Current => _firstIsCurrent ? first : Second;
    public OrtValue Next => _firstIsCurrent ? Second : first;
    private OrtValue Second => _second ??= makeSecond();
    public void Swap() => _firstIsCurrent = !_firstIsCurrent;

    /// <summary>Back to the first buffer, so a step's first write always lands at the same address.</summary>
    public void Reset() => _firstIsCurrent = true;
}

/// <summary>
/// Trainable tensors, AdamW moments and gradients as flat fp32 vectors resident on the device for the
/// whole run. The gradient step reads each trainable tensor through a view (an OrtValue over the flat
/// buffer at its offset); the optimizer updates parameters and moments in place, chunk by chunk
/// (<see cref="ChunkedOptimizer"/>), so they stay at one address and take one buffer each.
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
    public OrtValue Params { get; private set; } = null!;
    public OrtValue M { get; private set; } = null!;
    public OrtValue V { get; private set; } = null!;
    public DoubleBuffer Grads { get; private set; } = null!;

    public void Load(AdapterWeights weights, AdapterWeights? m = null, AdapterWeights? v = null)
    {
        Params = Upload(Flatten(weights));
        M = Upload(m is null ? new float[Count] : Flatten(m));
        V = Upload(v is null ? new float[Count] : Flatten(v));
        Grads = new DoubleBuffer(_store.Allocate(DType.Float32, [Count]), () => _store.Allocate(DType.Float32, [Count]));
    }

    private float[] Flatten(AdapterWeights w)
    {
        var flat = new float[Count];
        foreach (var (key, offset, count) in Layout) w[key].Data.AsSpan(0, (int)count).CopyTo(flat.AsSpan((int)offset));
        return flat;
    }

    private OrtValue Upload(float[] data) => _store.Upload(HostTensor.Of(data, Count));

    /// <summary>Per-tensor views of the current trainable values (created once per buffer).</summary>
    public IReadOnlyDictionary<string, OrtValue> ParamViews() => Views(Params);

    /// <summary>Per-tensor views of a flat buffer (params or gradients), created once per buffer.</summary>
    public IReadOnlyDictionary<string, OrtValue> Views(OrtValue buffer)
    {
        if (_views.TryGetValue(buffer, out var views)) return views;
        views = [];
        foreach (var ((key, offset, count), t) in Layout.Zip(Trainable)) views[key] = View(buffer, offset, t.Shape, count);
        _views[buffer] = views;
        return views;
    }

    /// <summary>A 1-D view of <paramref name="count"/> elements of a flat buffer from <paramref name="offset"/> (created once).</summary>
    public OrtValue Slice(OrtValue buffer, long offset, long count)
    {
        if (_slices.TryGetValue((buffer, offset, count), out var view)) return view;
        return _slices[(buffer, offset, count)] = View(buffer, offset, [count], count);
    }

    /// <summary>An fp32 tensor of <paramref name="shape"/> over <paramref name="count"/> elements of a flat buffer.</summary>
    private OrtValue View(OrtValue buffer, long offset, long[] shape, long count) =>
        OrtValue.CreateTensorValueWithData(_rt.DeviceMemory, Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float, shape, Address(buffer) + (nint)(offset * 4), count * 4);

    private readonly Dictionary<(OrtValue, long, long), OrtValue> _slices = [];

    private static unsafe nint Address(OrtValue v) => (nint)Unsafe(v.GetTensorMutableRawData());

    private static unsafe void* Unsafe(Span<byte> span) => System.Runtime.CompilerServices.Unsafe.AsPointer(ref MemoryMarshal.GetReference(span));

    /// <summary>Current values of one kind of state on the host, split by tensor in reference key order.</summary>
    public AdapterWeights Download(OrtValue which)
    {
        var flat = _store.Download(which).Floats();
        var w = new AdapterWeights();
        foreach (var ((key, offset, count), t) in Layout.Zip(Trainable)) w.Set(key, t.Shape, flat.AsSpan((int)offset, (int)count).ToArray());
        return w;
    }

    public void Dispose()
    {
        foreach (var views in _views.Values) foreach (var v in views.Values) v.Dispose();
        _views.Clear();
        foreach (var v in _slices.Values) v.Dispose();
        _slices.Clear();
    }
}
