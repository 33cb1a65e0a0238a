using System.Buffers.Binary;
using System.Runtime.InteropServices;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.IO;

/// <summary>
/// Element conversions between raw little-endian tensor bytes (as stored in safetensors and torch
/// files) and .NET arrays. bf16 rounding matches torch (round to nearest even, NaN kept quiet).
/// </summary>
public static class TensorConvert
{
    public static float[] ToFloat32(DType dtype, ReadOnlySpan<byte> bytes)
    {
        var n = Count(dtype, bytes.Length);
        var r = new float[n];
        switch (dtype)
        {
            case DType.Float32:
                MemoryMarshal.Cast<byte, float>(bytes).CopyTo(r);
                break;
            case DType.Float16:
                for (var i = 0; i < n; i++) r[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(bytes[(2 * i)..]);
                break;
            case DType.BFloat16:
                for (var i = 0; i < n; i++) r[i] = BFloat16ToFloat(BinaryPrimitives.ReadUInt16LittleEndian(bytes[(2 * i)..]));
                break;
            case DType.Float64:
                for (var i = 0; i < n; i++) r[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(bytes[(8 * i)..]);
                break;
            default:
                throw Fail.Arg(nameof(dtype), dtype, "a floating-point dtype");
        }
        return r;
    }

    public static double[] ToFloat64(DType dtype, ReadOnlySpan<byte> bytes)
    {
        if (dtype == DType.Float64) return MemoryMarshal.Cast<byte, double>(bytes).ToArray();
        return ToFloat32(dtype, bytes).Select(f => (double)f).ToArray();
    }

    public static long[] ToInt64(DType dtype, ReadOnlySpan<byte> bytes) => dtype switch
    {
        DType.Int64 => MemoryMarshal.Cast<byte, long>(bytes).ToArray(),
        DType.Int32 => MemoryMarshal.Cast<byte, int>(bytes).ToArray().Select(i => (long)i).ToArray(),
        DType.Int8 => MemoryMarshal.Cast<byte, sbyte>(bytes).ToArray().Select(i => (long)i).ToArray(),
        DType.UInt8 or DType.Bool => bytes.ToArray().Select(i => (long)i).ToArray(),
        _ => throw Fail.Arg(nameof(dtype), dtype, "an integer or bool dtype"),
    };

    /// <summary>Float values as bytes of <paramref name="dtype"/> (f32, f16, bf16 or f64).</summary>
    public static byte[] FromFloat32(ReadOnlySpan<float> values, DType dtype)
    {
        switch (dtype)
        {
            case DType.Float32:
                return MemoryMarshal.AsBytes(values).ToArray();
            case DType.Float64:
            {
                var d = new double[values.Length];
                for (var i = 0; i < d.Length; i++) d[i] = values[i];
                return MemoryMarshal.AsBytes(d.AsSpan()).ToArray();
            }
            case DType.Float16:
            {
                var r = new byte[values.Length * 2];
                for (var i = 0; i < values.Length; i++) BinaryPrimitives.WriteHalfLittleEndian(r.AsSpan(2 * i), (Half)values[i]);
                return r;
            }
            case DType.BFloat16:
            {
                var r = new byte[values.Length * 2];
                for (var i = 0; i < values.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(r.AsSpan(2 * i), FloatToBFloat16(values[i]));
                return r;
            }
            default:
                throw Fail.Arg(nameof(dtype), dtype, "a floating-point dtype");
        }
    }

    public static float BFloat16ToFloat(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    public static ushort FloatToBFloat16(float f)
    {
        var u = BitConverter.SingleToUInt32Bits(f);
        if (float.IsNaN(f)) return (ushort)((u >> 16) | 0x40);
        var bias = ((u >> 16) & 1) + 0x7FFFu;
        return (ushort)((u + bias) >> 16);
    }

    private static int Count(DType dtype, int byteLength)
    {
        var size = dtype.ByteSize();
        if (byteLength % size != 0) throw Fail.Arg(nameof(byteLength), byteLength, $"a multiple of {size} for {dtype.Name()}");
        return byteLength / size;
    }
}
