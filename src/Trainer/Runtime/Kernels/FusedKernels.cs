using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.Trainer.Runtime.Kernels;

/// <summary>Whether graphs for a device and compute dtype may use the com.mixlora fused kernels.</summary>
public static class FusedKernels
{
    /// <summary>
    /// True when the device has kernels for <paramref name="compute"/>: float32 on the CPU; bfloat16, float16 and
    /// float32 on CUDA where NVRTC and the driver load (otherwise a note goes to <paramref name="log"/> and the
    /// graphs are composed from ONNX ops, as with --no-fused-kernels).
    /// </summary>
    public static bool Available(Device device, DType compute, TextWriter? log = null)
    {
        if (device == Device.Cpu) return SwiGluSlotsOps.CpuTypes.Contains(compute);
        if (!SwiGluSlotsOps.CudaTypes.Contains(compute)) return false;
        if (CudaRtc.Unavailable() is not { } why) return true;
        log?.WriteLine($"note: fused kernels off ({why})");
        return false;
    }
}
