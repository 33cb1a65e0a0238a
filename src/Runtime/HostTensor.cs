using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.Runtime;

/// <summary>A tensor in host memory: dtype, shape and little-endian bytes.</summary>
public sealed record HostTensor(DType DType, long[] Shape, byte[] Bytes)
{
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);

    public static HostTensor Of(float[] v, params long[] shape) => new(DType.Float32, shape, MemoryMarshal.AsBytes(v.AsSpan()).ToArray());
    public static HostTensor Of(double[] v, params long[] shape) => new(DType.Float64, shape, MemoryMarshal.AsBytes(v.AsSpan()).ToArray());
    public static HostTensor Of(long[] v, params long[] shape) => new(DType.Int64, shape, MemoryMarshal.AsBytes(v.AsSpan()).ToArray());
    public static HostTensor Of(bool[] v, params long[] shape) => new(DType.Bool, shape, v.Select(b => b ? (byte)1 : (byte)0).ToArray());

    public float[] Floats() => TensorConvert.ToFloat32(DType, Bytes);
    public double[] Doubles() => TensorConvert.ToFloat64(DType, Bytes);
    public long[] Longs() => DType == DType.Int64 ? MemoryMarshal.Cast<byte, long>(Bytes).ToArray() : throw Fail.Bug($"Longs() of a {DType.Name()} tensor");
    public double Scalar() => Doubles()[0];

    internal static TensorElementType Element(DType t) => (TensorElementType)(int)t;

    /// <summary>Copies an OrtValue (on CPU) into host memory.</summary>
    public static HostTensor From(OrtValue v)
    {
        var info = v.GetTensorTypeAndShape();
        var dtype = (DType)(int)info.ElementDataType;
        var bytes = v.GetTensorDataAsSpan<byte>().ToArray();
        return new HostTensor(dtype, info.Shape, bytes);
    }
}

/// <summary>Runs a graph on host tensors (tests, CPU tools); copies in and out on each call.</summary>
public sealed class GraphRunner : IDisposable
{
    private readonly InferenceSession _session;

    public GraphRunner(OrtRuntime runtime, Graph graph) : this(runtime, GraphBuilder.Onnx.OnnxWriter.ToBytes(graph)) { }

    public GraphRunner(OrtRuntime runtime, byte[] model, SessionOptions? options = null) => _session = runtime.Session(model, options);

    public IReadOnlyList<string> OutputNames => _session.OutputNames;

    public Dictionary<string, HostTensor> Run(IReadOnlyDictionary<string, HostTensor> inputs, IReadOnlyList<string>? outputs = null)
    {
        var names = outputs ?? _session.OutputNames;
        var handles = new List<GCHandle>();
        var values = new List<OrtValue>();
        try
        {
            var inNames = new List<string>();
            foreach (var (name, t) in inputs)
            {
                if (!_session.InputMetadata.ContainsKey(name)) continue;
                var h = GCHandle.Alloc(t.Bytes, GCHandleType.Pinned);
                handles.Add(h);
                values.Add(OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, HostTensor.Element(t.DType), t.Shape, h.AddrOfPinnedObject(), t.Bytes.Length));
                inNames.Add(name);
            }
            using var opts = new RunOptions();
            using var results = _session.Run(opts, inNames, values, names);
            return names.Zip(results).ToDictionary(p => p.First, p => HostTensor.From(p.Second));
        }
        finally
        {
            foreach (var v in values) v.Dispose();
            foreach (var h in handles) h.Free();
        }
    }

    public void Dispose() => _session.Dispose();
}
