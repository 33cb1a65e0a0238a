using System.Collections.Immutable;

namespace MixLoRA.GraphBuilder.IR;

/// <summary>A named tensor in a graph. Shape is null when even the rank is unknown.</summary>
public sealed record Value(string Name, DType DType, Shape? Shape)
{
    public int Rank => Shape?.Rank ?? throw Fail.Bug($"rank of '{Name}' is unknown");
    public Shape S => Shape ?? throw Fail.Bug($"shape of '{Name}' is unknown");
    public override string ToString() => $"{Name}: {DType.Name()}{Shape?.ToString() ?? "(?)"}";
}

/// <summary>Constant tensor bytes (little-endian, row-major) for initializers and Constant nodes.</summary>
public sealed record TensorData(string Name, DType DType, ImmutableArray<long> Dims, ReadOnlyMemory<byte> Bytes)
{
    public long Count => Dims.Aggregate(1L, (a, b) => a * b);

    public static TensorData FromLongs(string name, long[] values, params long[] dims) =>
        new(name, DType.Int64, dims.ToImmutableArray(), System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray());

    public static TensorData FromFloats(string name, float[] values, params long[] dims) =>
        new(name, DType.Float32, dims.ToImmutableArray(), System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray());

    public static TensorData FromDoubles(string name, double[] values, params long[] dims) =>
        new(name, DType.Float64, dims.ToImmutableArray(), System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray());

    /// <summary>Values as int64 (from integer or bool tensors).</summary>
    public long[] AsLongs() => DType.IsFloat() ? throw Fail.Bug($"{Name} is {DType.Name()}, not an integer tensor") : IO.TensorConvert.ToInt64(DType, Bytes.Span);

    /// <summary>Values as float64 (from float, integer or bool tensors); for tests and scalar constants.</summary>
    public double[] AsDoubles() => DType.IsFloat() ? IO.TensorConvert.ToFloat64(DType, Bytes.Span) : AsLongs().Select(l => (double)l).ToArray();
}
