using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.Runtime.Kernels;

/// <summary>Which com.mixlora fused kernels training graphs for a device and compute dtype use.</summary>
public static class FusedKernels
{
    /// <summary>Compute dtypes the trainer has kernels for, per device (float32 routing weights always).</summary>
    public static readonly DType[] CpuTypes = [DType.Float32];
    public static readonly DType[] CudaTypes = [DType.BFloat16, DType.Float16, DType.Float32];

    /// <summary>
    /// Those of <paramref name="requested"/> (<see cref="FusedOps.All"/> by default, <see cref="FusedOps.None"/> with --no-fused-kernels)
    /// the runtime has kernels for on <paramref name="device"/> in <paramref name="compute"/>:
    /// on the CPU, float32 graphs use all four (C# kernels; AdamW is the optimizer graph's); on CUDA, bfloat16, float16 and float32 graphs use
    /// SwiGluSlots and the loss where NVRTC and the driver load (otherwise a note goes to <paramref name="log"/> and
    /// the graphs are composed from ONNX ops, as with --no-fused-kernels). SlotLora is CPU-only: on the GPU the
    /// masked GEMM over all experts' rank columns is a few percent of the step and runs on tensor cores.
    /// </summary>
    public static FusedOps For(FusedOps requested, Device device, DType compute, TextWriter? log = null) => requested & Available(requested, device, compute, log);

    private static FusedOps Available(FusedOps requested, Device device, DType compute, TextWriter? log)
    {
        if (requested == FusedOps.None) return FusedOps.None;
        if (device == Device.Cpu) return CpuTypes.Contains(compute) ? FusedOps.All : FusedOps.None;
        if (!CudaTypes.Contains(compute)) return FusedOps.None;
        if (CudaRtc.Unavailable() is not { } why) return FusedOps.SwiGluSlots | FusedOps.CrossEntropy;
        log?.WriteLine($"note: fused kernels off ({why})");
        return FusedOps.None;
    }
}
