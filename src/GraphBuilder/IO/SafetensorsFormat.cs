using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.IO;

/// <summary>Where one tensor lies in a safetensors file: dtype, shape and absolute byte range.</summary>
public sealed record SafetensorsTensorInfo(string Name, DType DType, long[] Shape, long ByteOffset, long ByteLength)
{
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>The dtype names of the safetensors header ("F32", "BF16", ...).</summary>
public static class SafetensorsFormat
{
    /// <summary>The safetensors reference implementation refuses headers above 100 MB.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    public static DType? TryParse(string name) => name switch
    {
        "F32" => DType.Float32,
        "F16" => DType.Float16,
        "BF16" => DType.BFloat16,
        "F64" => DType.Float64,
        "I64" => DType.Int64,
        "I32" => DType.Int32,
        "I8" => DType.Int8,
        "U8" => DType.UInt8,
        "BOOL" => DType.Bool,
        _ => null,
    };

    public static string Name(DType t) => t switch
    {
        DType.Float32 => "F32",
        DType.Float16 => "F16",
        DType.BFloat16 => "BF16",
        DType.Float64 => "F64",
        DType.Int64 => "I64",
        DType.Int32 => "I32",
        DType.Int8 => "I8",
        DType.UInt8 => "U8",
        DType.Bool => "BOOL",
        _ => throw Fail.Arg(nameof(t), t, "a dtype safetensors can store"),
    };
}
