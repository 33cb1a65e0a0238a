using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.Trainer.Runtime.Kernels;

/// <summary>Whether training graphs for a device and compute dtype use the com.mixlora fused kernels.</summary>
public static class FusedKernels
{
    /// <summary>
    /// True on CUDA for bfloat16, float16 and float32 where NVRTC and the driver load (otherwise a note goes to
    /// <paramref name="log"/> and the graphs are composed from ONNX ops, as with --no-fused-kernels). False on
    /// the CPU: its float32 kernels (plain C#) are the CUDA kernels' reference and run in tests, but ORT's own
    /// vectorised CPU kernels are faster (mixlora-bench --config tiny --device cpu at commit 4741512: MixLoRA
    /// 21.4 ms/step fused, 17.6 with --no-fused-kernels).
    /// </summary>
    public static bool Available(Device device, DType compute, TextWriter? log = null)
    {
        if (device == Device.Cpu) return false;
        if (!SwiGluSlotsOps.CudaTypes.Contains(compute)) return false;
        if (CudaRtc.Unavailable() is not { } why) return true;
        log?.WriteLine($"note: fused kernels off ({why})");
        return false;
    }
}
