namespace MixLoRA.GraphBuilder.IR;

/// <summary>Element types, numbered as ONNX TensorProto.DataType.</summary>
public enum DType
{
    Float32 = 1,
    UInt8 = 2,
    Int8 = 3,
    Int32 = 6,
    Int64 = 7,
    Bool = 9,
    Float16 = 10,
    Float64 = 11,
    BFloat16 = 16,
}

public static class DTypes
{
    public static bool IsFloat(this DType t) => t is DType.Float32 or DType.Float16 or DType.Float64 or DType.BFloat16;

    public static int ByteSize(this DType t) => t switch
    {
        DType.Float32 or DType.Int32 => 4,
        DType.Float16 or DType.BFloat16 => 2,
        DType.Float64 or DType.Int64 => 8,
        DType.UInt8 or DType.Int8 or DType.Bool => 1,
        _ => throw Fail.Arg(nameof(t), t, "a known dtype"),
    };

    /// <summary>The most negative finite value of a float dtype (HF's torch.finfo(dtype).min).</summary>
    public static double Lowest(this DType t) => t switch
    {
        DType.Float32 => float.MinValue,
        DType.Float64 => double.MinValue,
        DType.Float16 => -65504.0,
        DType.BFloat16 => -3.3895313892515355e38,
        _ => throw Fail.Arg(nameof(t), t, "a float dtype"),
    };

    /// <summary>Parses the names users write (float32, fp16, bf16, ...).</summary>
    public static DType Parse(string s) => s.ToLowerInvariant() switch
    {
        "float32" or "fp32" or "float" or "f32" => DType.Float32,
        "float16" or "fp16" or "half" or "f16" => DType.Float16,
        "bfloat16" or "bf16" => DType.BFloat16,
        "float64" or "fp64" or "double" or "f64" => DType.Float64,
        "int64" or "i64" => DType.Int64,
        "int32" or "i32" => DType.Int32,
        "bool" => DType.Bool,
        _ => throw Fail.User($"unknown dtype '{s}'", "use float32, float16 or bfloat16"),
    };

    public static string Name(this DType t) => t switch
    {
        DType.Float32 => "float32",
        DType.Float16 => "float16",
        DType.BFloat16 => "bfloat16",
        DType.Float64 => "float64",
        DType.Int64 => "int64",
        DType.Int32 => "int32",
        DType.Bool => "bool",
        DType.UInt8 => "uint8",
        DType.Int8 => "int8",
        _ => t.ToString(),
    };
}
