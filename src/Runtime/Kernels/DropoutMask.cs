using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.Runtime.Kernels;

/// <summary>
/// The in-kernel dropout mask of <see cref="DropoutHash.Keep"/> on the CPU, as multipliers: element i of a row
/// is Scale when Bits(start, i) ≥ Threshold, else 0. The splitmix64 hash runs on eight or sixteen lanes at a time
/// (Vector512 or Vector256 of ulong); the scalar loop finishes the row and is the reference the vector loops are tested against.
/// </summary>
internal readonly record struct DropoutMask(bool On, ulong Start, ulong Threshold, float Scale)
{
    /// <summary>The mask of a node with dropout <paramref name="ratio"/> and <paramref name="salt"/> for the seed at <paramref name="seed"/> (0: no dropout).</summary>
    public static unsafe DropoutMask Of(nint seed, double ratio, long salt) => seed == 0 ? default
        : new(true, DropoutHash.Start(*(long*)seed, salt), DropoutHash.Threshold(ratio), 1f / (1f - (float)ratio));

    /// <summary>The widest vector the hash loop can use here, in bits (0: none).</summary>
    public static int Widest => Vector512.IsHardwareAccelerated ? 512 : Vector256.IsHardwareAccelerated ? 256 : 0;

    /// <summary>mult[c] ← Scale if element first + c is kept, else 0 (1 everywhere without dropout).</summary>
    public void Fill(long first, Span<float> mult) => Fill(first, mult, Widest);

    /// <summary><see cref="Fill(long, Span{float})"/> with vectors of at most <paramref name="bits"/> (the tests run each width).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal void Fill(long first, Span<float> mult, int bits)
    {
        if (!On)
        {
            mult.Fill(1f);
            return;
        }
        var c = 0;
        var at = unchecked(Start + (ulong)first);
        if (bits >= 512 && Vector512.IsHardwareAccelerated)
        {
            var iota = Vector512.Create(0UL, 1, 2, 3, 4, 5, 6, 7);
            var (t, s) = (Vector512.Create((uint)Threshold), Vector512.Create(Scale));
            for (; c + 16 <= mult.Length; c += 16)
            {
                var z = Vector512.Create(unchecked(at + (ulong)c)) + iota;
                var q = Vector512.Narrow(Hash(z), Hash(z + Vector512.Create(8UL)));                   // (16) uint
                Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(q, t).AsSingle(), s, Vector512<float>.Zero).CopyTo(mult[c..]);
            }
        }
        else if (bits >= 256 && Vector256.IsHardwareAccelerated)
        {
            var iota = Vector256.Create(0UL, 1, 2, 3);
            var (t, s) = (Vector256.Create((uint)Threshold), Vector256.Create(Scale));
            for (; c + 8 <= mult.Length; c += 8)
            {
                var z = Vector256.Create(unchecked(at + (ulong)c)) + iota;
                var q = Vector256.Narrow(Hash(z), Hash(z + Vector256.Create(4UL)));                    // (8) uint
                Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(q, t).AsSingle(), s, Vector256<float>.Zero).CopyTo(mult[c..]);
            }
        }
        for (; c < mult.Length; c++) mult[c] = DropoutHash.Bits(Start, first + c) >= Threshold ? Scale : 0f;
    }

    /// <summary><see cref="DropoutHash.Bits"/> on each lane of z (the state start + i).</summary>
    private static Vector512<ulong> Hash(Vector512<ulong> z)
    {
        z = (z ^ (z >> 30)) * Vector512.Create(0xBF58476D1CE4E5B9UL);
        z = (z ^ (z >> 27)) * Vector512.Create(0x94D049BB133111EBUL);
        return (z ^ (z >> 31)) >> 40;
    }

    private static Vector256<ulong> Hash(Vector256<ulong> z)
    {
        z = (z ^ (z >> 30)) * Vector256.Create(0xBF58476D1CE4E5B9UL);
        z = (z ^ (z >> 27)) * Vector256.Create(0x94D049BB133111EBUL);
        return (z ^ (z >> 31)) >> 40;
    }
}
