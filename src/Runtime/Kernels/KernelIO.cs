using MixLoRA.GraphBuilder;

namespace MixLoRA.Runtime.Kernels;

/// <summary>
/// What every com.mixlora kernel needs from its OrtKernelContext: element-type codes, the CUDA provider's
/// name, input/output data pointers, optional inputs and shape checks with messages naming the tensor.
/// </summary>
internal static class KernelIO
{
    /// <summary>ONNX TensorProto element types.</summary>
    public const int Float = 1, Float16 = 10, BFloat16 = 16, Int64 = 7;

    public const string Cuda = "CUDAExecutionProvider";

    public static nint In(nint ctx, int i) => OrtKernelApi.Data(OrtKernelApi.Input(ctx, i));

    public static nint Out(nint ctx, int i, params long[] dims) => OrtKernelApi.Data(OrtKernelApi.Output(ctx, i, dims));

    /// <summary>Input i's dims.</summary>
    public static long[] Dims(nint ctx, int i) => OrtKernelApi.TypeAndShape(OrtKernelApi.Input(ctx, i)).Dims;

    /// <summary>Throws unless input i (called <paramref name="name"/>) has exactly <paramref name="dims"/>.</summary>
    public static void Expect(nint ctx, int i, string name, params long[] dims)
    {
        var shape = Dims(ctx, i);
        if (!shape.SequenceEqual(dims)) throw Fail.Bug($"{name} must be ({string.Join(", ", dims)}); got ({string.Join(", ", shape)})");
    }

    /// <summary>The optional input i when present (checked against <paramref name="dims"/>), else 0.</summary>
    public static nint Optional(nint ctx, int i, string name, params long[] dims)
    {
        if (i >= OrtKernelApi.InputCount(ctx) || OrtKernelApi.Input(ctx, i) == 0) return 0;
        Expect(ctx, i, name, dims);
        return In(ctx, i);
    }

    /// <summary>The kernel-name suffix of an element type in the CUDA sources (bf16, f16, f32).</summary>
    public static string CudaSuffix(int type) => type switch
    {
        BFloat16 => "bf16",
        Float16 => "f16",
        Float => "f32",
        _ => throw Fail.Bug($"no CUDA kernel for element type {type}"),
    };
}
