using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.Runtime.Kernels;

/// <summary>Which com.mixlora fused kernels training graphs for a device and compute dtype use.</summary>
public static class FusedKernels
{
    /// <summary>
    /// The fused ops for <paramref name="device"/> in <paramref name="compute"/> (none unless <paramref name="requested"/>):
    /// on the CPU, float32 graphs use all four (C# kernels; AdamW is the optimizer graph's); on CUDA, bfloat16, float16 and float32 graphs use
    /// SwiGluSlots and the loss where NVRTC and the driver load (otherwise a note goes to <paramref name="log"/> and
    /// the graphs are composed from ONNX ops, as with --no-fused-kernels). SlotLora is CPU-only: on the GPU the
    /// masked GEMM over all experts' rank columns is a few percent of the step and runs on tensor cores.
    /// </summary>
    public static FusedOps For(bool requested, Device device, DType compute, TextWriter? log = null)
    {
        if (!requested) return FusedOps.None;
        if (device == Device.Cpu) return SwiGluSlotsOps.CpuTypes.Contains(compute) ? FusedOps.All : FusedOps.None;
        if (!SwiGluSlotsOps.CudaTypes.Contains(compute)) return FusedOps.None;
        if (CudaRtc.Unavailable() is not { } why) return FusedOps.SwiGluSlots | FusedOps.CrossEntropy;
        log?.WriteLine($"note: fused kernels off ({why})");
        return FusedOps.None;
    }

    /// <summary>The single ops in <paramref name="ops"/>, by name (empty for none).</summary>
    public static string[] Names(FusedOps ops) =>
        Enum.GetValues<FusedOps>().Where(f => f != FusedOps.None && f != FusedOps.All && ops.HasFlag(f)).Select(f => f.ToString()).ToArray();
}
