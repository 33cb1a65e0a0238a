using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.Runtime;

/// <summary>
/// Tensors that live where the runtime computes (CPU memory or the GPU), allocated once and bound to
/// sessions by name. Host data enters with <see cref="Upload"/> and leaves with <see cref="Download"/>.
/// </summary>
public sealed class DeviceTensors : IDisposable
{
    private readonly OrtRuntime _rt;
    private readonly OrtAllocator _allocator;
    private readonly List<OrtValue> _owned = [];

    /// <param name="allocatorSession">unused; kept for callers that pass the session they allocate for.</param>
    public DeviceTensors(OrtRuntime rt, InferenceSession? allocatorSession = null)
    {
        _rt = rt;
        _ = allocatorSession;
        _allocator = rt.DeviceAllocator();
    }

    public long BytesAllocated { get; private set; }

    public OrtValue Allocate(DType dtype, long[] shape)
    {
        var v = OrtValue.CreateAllocatedTensorValue(_allocator, HostTensor.Element(dtype), shape);
        _owned.Add(v);
        BytesAllocated += shape.Aggregate(1L, (a, b) => a * b) * dtype.ByteSize();
        return v;
    }

    /// <summary>A new device tensor holding the host tensor's data.</summary>
    public OrtValue Upload(HostTensor t)
    {
        var v = Allocate(t.DType, t.Shape);
        CopyIn(t.Bytes, v);
        return v;
    }

    /// <summary>Copies bytes into an existing device tensor (same byte size).</summary>
    public void CopyIn(ReadOnlySpan<byte> bytes, OrtValue dst)
    {
        if (_rt.Device == Device.Cpu)
        {
            var span = dst.GetTensorMutableRawData();
            if (span.Length != bytes.Length) throw Fail.Bug($"copy of {bytes.Length} bytes into a {span.Length}-byte tensor");
            bytes.CopyTo(span);
            return;
        }
        unsafe
        {
            fixed (byte* p = bytes)
            {
                var info = dst.GetTensorTypeAndShape();
                using var src = OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, info.ElementDataType, info.Shape, (IntPtr)p, bytes.Length);
                OrtEnv.Instance().CopyTensors([src], [dst], null);
            }
        }
    }

    /// <summary>The device tensor's contents on the host.</summary>
    public HostTensor Download(OrtValue v)
    {
        var info = v.GetTensorTypeAndShape();
        var dtype = (DType)(int)info.ElementDataType;
        if (_rt.Device == Device.Cpu) return HostTensor.From(v);
        var bytes = new byte[info.ElementCount * dtype.ByteSize()];
        unsafe
        {
            fixed (byte* p = bytes)
            {
                using var dst = OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, info.ElementDataType, info.Shape, (IntPtr)p, bytes.Length);
                OrtEnv.Instance().CopyTensors([v], [dst], null);
            }
        }
        return new HostTensor(dtype, info.Shape, bytes);
    }

    public void Dispose()
    {
        foreach (var v in _owned) v.Dispose();
        _owned.Clear();
    }
}

/// <summary>A session run through IoBinding: every input and output bound to a device tensor by name.</summary>
public sealed class BoundSession : IDisposable
{
    private readonly InferenceSession _session;
    private readonly OrtIoBinding _binding;
    private readonly RunOptions _options = new();

    public BoundSession(OrtRuntime rt, byte[] model, SessionOptions? options = null)
    {
        _session = rt.Session(model, options);
        _binding = _session.CreateIoBinding();
        Inputs = _session.InputMetadata.Keys.ToHashSet(StringComparer.Ordinal);
        Outputs = _session.OutputMetadata.Keys.ToArray();
    }

    public InferenceSession Session => _session;
    public IReadOnlySet<string> Inputs { get; }
    public IReadOnlyList<string> Outputs { get; }

    /// <summary>
    /// Binds the named inputs (unknown names are ignored) and outputs, then runs. Only names whose tensor
    /// changed since the last run are rebound: a MixLoRA step binds ~2,700 tensors, and most stay put.
    /// </summary>
    public void Run(IReadOnlyDictionary<string, OrtValue> inputs, IReadOnlyDictionary<string, OrtValue> outputs) => Run(inputs, outputs, _options);

    /// <summary>Whether every named tensor is the one bound last run (a replayed CUDA graph reuses those addresses).</summary>
    public bool BoundTo(IReadOnlyDictionary<string, OrtValue> inputs, IReadOnlyDictionary<string, OrtValue> outputs) =>
        Inputs.All(n => inputs.TryGetValue(n, out var v) && _boundIn.TryGetValue(n, out var was) && ReferenceEquals(v, was))
        && Outputs.All(n => outputs.TryGetValue(n, out var v) && _boundOut.TryGetValue(n, out var was) && ReferenceEquals(v, was));

    private void Run(IReadOnlyDictionary<string, OrtValue> inputs, IReadOnlyDictionary<string, OrtValue> outputs, RunOptions options)
    {
        foreach (var name in Inputs)
        {
            if (!inputs.TryGetValue(name, out var v)) throw Fail.Bug($"session input '{name}' has no tensor bound");
            if (_boundIn.TryGetValue(name, out var was) && ReferenceEquals(was, v)) continue;
            _binding.BindInput(name, v);
            _boundIn[name] = v;
        }
        foreach (var name in Outputs)
        {
            if (!outputs.TryGetValue(name, out var v)) throw Fail.Bug($"session output '{name}' has no tensor bound");
            if (_boundOut.TryGetValue(name, out var was) && ReferenceEquals(was, v)) continue;
            _binding.BindOutput(name, v);
            _boundOut[name] = v;
        }
        _session.RunWithBinding(options, _binding);
    }

    private readonly Dictionary<string, OrtValue> _boundIn = new(StringComparer.Ordinal), _boundOut = new(StringComparer.Ordinal);

    public void Dispose()
    {
        _binding.Dispose();
        _options.Dispose();
        _session.Dispose();
    }
}
