using System.Runtime.InteropServices;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.Runtime;
using MixLoRA.Trainer.Model;

namespace MixLoRA.Cli.Bench;

/// <summary>
/// Frozen weights for benchmarks: any declared shape, filled in parallel by xorshift64* streams (seeded from
/// the key and the chunk, so the values are reproducible) straight into the requested dtype. Matrices are
/// uniform with std 0.02 (the HF initializer range); RMSNorm weights are 1 and biases 0, as a freshly
/// initialized model has them. Nothing is read from or written to disk.
/// </summary>
public sealed class RandomWeights(ulong seed = 42) : IWeightProvider
{
    private const int Chunk = 1 << 16;
    private static readonly float Bound = (float)(0.02 * Math.Sqrt(3));

    public void Validate(IReadOnlyDictionary<string, Value> declared)
    {
        foreach (var (key, v) in declared)
        {
            if (v.Shape is not { IsStatic: true }) throw Fail.Bug($"weight '{key}' has no static shape");
        }
    }

    public HostTensor Load(string key, DType dtype, long[] shape)
    {
        var count = shape.Aggregate(1L, (a, b) => a * b);
        var bytes = new byte[count * dtype.ByteSize()];
        var constant = key.EndsWith("norm.weight", StringComparison.Ordinal) ? 1f : key.EndsWith(".bias", StringComparison.Ordinal) ? 0f : (float?)null;
        var keySeed = seed ^ Fnv(key);
        var chunks = (int)((count + Chunk - 1) / Chunk);
        Parallel.For(0, chunks, c =>
        {
            var start = (long)c * Chunk;
            var n = (int)Math.Min(Chunk, count - start);
            var state = Mix(keySeed + (ulong)c);
            var span = bytes.AsSpan((int)(start * dtype.ByteSize()), n * dtype.ByteSize());
            Fill(span, dtype, n, constant, ref state);
        });
        return new HostTensor(dtype, shape, bytes);
    }

    private static void Fill(Span<byte> span, DType dtype, int n, float? constant, ref ulong state)
    {
        switch (dtype)
        {
            case DType.Float32:
                var f = MemoryMarshal.Cast<byte, float>(span);
                for (var i = 0; i < n; i++) f[i] = constant ?? Next(ref state);
                break;
            case DType.Float16:
                var h = MemoryMarshal.Cast<byte, Half>(span);
                for (var i = 0; i < n; i++) h[i] = (Half)(constant ?? Next(ref state));
                break;
            case DType.BFloat16:
                var s = MemoryMarshal.Cast<byte, ushort>(span);
                for (var i = 0; i < n; i++) s[i] = (ushort)(BitConverter.SingleToUInt32Bits(constant ?? Next(ref state)) >> 16);
                break;
            default:
                throw Fail.Bug($"random weights in {dtype.Name()}");
        }
    }

    /// <summary>xorshift64*: a uniform value in (−Bound, Bound).</summary>
    private static float Next(ref ulong x)
    {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        var r = x * 0x2545F4914F6CDD1DUL;
        return ((float)(r >> 40) * (1f / (1 << 23)) - 1f) * Bound;
    }

    /// <summary>A non-zero xorshift state from any seed (splitmix64 finalizer).</summary>
    private static ulong Mix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        z ^= z >> 31;
        return z == 0 ? 1 : z;
    }

    private static ulong Fnv(string s)
    {
        var h = 14695981039346656037UL;
        foreach (var ch in s) h = (h ^ ch) * 1099511628211UL;
        return h;
    }
}
