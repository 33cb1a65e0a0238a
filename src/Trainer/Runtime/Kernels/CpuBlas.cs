using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace MixLoRA.Trainer.Runtime.Kernels;

/// <summary>
/// The small dense product the CPU kernels are built from, for the rank-R shapes TensorPrimitives calls are too
/// short for: <see cref="Combine"/>, y = Σ_r c_r · row_r (a row vector times a matrix, the output kept in registers
/// over all rows), and a transpose. Written here because no package reachable from this build offers a managed
/// small GEMM; vectorised with Vector256 (FMA) where the CPU has it.
/// </summary>
internal static class CpuBlas
{
    /// <summary>y (+)= Σ_r coef[r] · rows[r·len .. r·len + len) for r &lt; coef.Length.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Combine(ReadOnlySpan<float> coef, ReadOnlySpan<float> rows, int len, Span<float> y, bool accumulate = false)
    {
        var n = coef.Length;
        if (rows.Length < n * len || y.Length < len) throw new ArgumentException($"Combine: {n} rows of {len} need {n * len} floats and y of {len}; got {rows.Length} and {y.Length}");
        ref var rb = ref MemoryMarshal.GetReference(rows);
        ref var yb = ref MemoryMarshal.GetReference(y);
        var c = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; c + 32 <= len; c += 32)
            {
                var (a0, a1, a2, a3) = accumulate
                    ? (Vector256.LoadUnsafe(ref yb, (nuint)c), Vector256.LoadUnsafe(ref yb, (nuint)(c + 8)), Vector256.LoadUnsafe(ref yb, (nuint)(c + 16)), Vector256.LoadUnsafe(ref yb, (nuint)(c + 24)))
                    : (Vector256<float>.Zero, Vector256<float>.Zero, Vector256<float>.Zero, Vector256<float>.Zero);
                for (var r = 0; r < n; r++)
                {
                    var k = Vector256.Create(coef[r]);
                    var at = (nuint)((r * len) + c);
                    a0 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref rb, at), k, a0);
                    a1 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref rb, at + 8), k, a1);
                    a2 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref rb, at + 16), k, a2);
                    a3 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref rb, at + 24), k, a3);
                }
                a0.StoreUnsafe(ref yb, (nuint)c);
                a1.StoreUnsafe(ref yb, (nuint)(c + 8));
                a2.StoreUnsafe(ref yb, (nuint)(c + 16));
                a3.StoreUnsafe(ref yb, (nuint)(c + 24));
            }
            for (; c + 8 <= len; c += 8)
            {
                // narrow outputs (the rank R): four partial sums over the rows keep four FMA chains in flight
                var (a0, a1, a2, a3) = (accumulate ? Vector256.LoadUnsafe(ref yb, (nuint)c) : Vector256<float>.Zero, Vector256<float>.Zero, Vector256<float>.Zero, Vector256<float>.Zero);
                var r = 0;
                for (; r + 4 <= n; r += 4)
                {
                    var at = (nuint)((r * len) + c);
                    a0 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref rb, at), Vector256.Create(coef[r]), a0);
                    a1 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref rb, at + (nuint)len), Vector256.Create(coef[r + 1]), a1);
                    a2 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref rb, at + (nuint)(2 * len)), Vector256.Create(coef[r + 2]), a2);
                    a3 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref rb, at + (nuint)(3 * len)), Vector256.Create(coef[r + 3]), a3);
                }
                for (; r < n; r++) a0 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref rb, (nuint)((r * len) + c)), Vector256.Create(coef[r]), a0);
                ((a0 + a1) + (a2 + a3)).StoreUnsafe(ref yb, (nuint)c);
            }
        }
        for (; c < len; c++)
        {
            var a = accumulate ? y[c] : 0f;
            for (var r = 0; r < n; r++) a = MathF.FusedMultiplyAdd(rows[(r * len) + c], coef[r], a);
            y[c] = a;
        }
    }

    /// <summary>dst (cols, rows) = srcᵀ for src (rows, cols), row-major.</summary>
    public static void Transpose(ReadOnlySpan<float> src, int rows, int cols, Span<float> dst)
    {
        for (var i = 0; i < rows; i++)
        {
            for (var j = 0; j < cols; j++) dst[(j * rows) + i] = src[(i * cols) + j];
        }
    }
}
