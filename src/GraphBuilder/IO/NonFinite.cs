using System.Numerics;
using System.Runtime.InteropServices;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.IO;

/// <summary>
/// Counts the NaN and ±Inf elements of raw little-endian tensor bytes without converting them: an element is not
/// finite when its exponent bits are all ones (float32 0x7F800000, bfloat16 0x7F80, float16 0x7C00, float64
/// 0x7FF0…). One vectorized pass, so frozen weights can be checked as they are loaded.
/// </summary>
public static class NonFinite
{
    /// <summary>How many elements of <paramref name="bytes"/> (of <paramref name="dtype"/>) are NaN or infinite; 0 for integer dtypes.</summary>
    public static long Count(DType dtype, ReadOnlySpan<byte> bytes) => dtype switch
    {
        DType.Float32 => Masked(MemoryMarshal.Cast<byte, uint>(bytes), 0x7F80_0000u),
        DType.BFloat16 => Masked(MemoryMarshal.Cast<byte, ushort>(bytes), (ushort)0x7F80),
        DType.Float16 => Masked(MemoryMarshal.Cast<byte, ushort>(bytes), (ushort)0x7C00),
        DType.Float64 => Masked(MemoryMarshal.Cast<byte, ulong>(bytes), 0x7FF0_0000_0000_0000ul),
        _ => 0,
    };

    private static long Masked<T>(ReadOnlySpan<T> bits, T mask)
        where T : unmanaged, IBinaryInteger<T>
    {
        long count = 0;
        var i = 0;
        if (Vector.IsHardwareAccelerated && bits.Length >= Vector<T>.Count)
        {
            var m = new Vector<T>(mask);
            var vectors = MemoryMarshal.Cast<T, Vector<T>>(bits);
            foreach (var v in vectors)
            {
                var hit = Vector.Equals(v & m, m);
                if (hit == Vector<T>.Zero) continue;
                for (var k = 0; k < Vector<T>.Count; k++) count += hit[k] == T.Zero ? 0 : 1;
            }
            i = vectors.Length * Vector<T>.Count;
        }
        for (; i < bits.Length; i++) count += (bits[i] & mask) == mask ? 1 : 0;
        return count;
    }
}
