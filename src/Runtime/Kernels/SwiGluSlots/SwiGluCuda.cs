namespace MixLoRA.Runtime.Kernels;

/// <summary>
/// The SwiGluSlots kernels on CUDA: one thread block per token, threads striding over F two columns at a
/// time (32-bit bf16/fp16 pairs, float2), all math in float32, one rounding per output; the backward reduces
/// dW over F in the block (warp shuffles, then shared memory). Compiled by NVRTC at first use
/// (<see cref="CudaRtc"/>) for the device in use from SwiGluSlots.cu (embedded); no CUDA headers are needed. Dropout of H uses the same
/// counter-based hash as the CPU kernel, so masks are bit-identical across devices.
/// </summary>
internal static unsafe class SwiGluCuda
{
    private const int Threads = 256;

    public static void Forward(nint ctx, NodeAttrs a, int type)
    {
        var (n, k, f) = SwiGluKernels.Sizes(ctx);
        nint g = KernelIO.In(ctx, 0), u = KernelIO.In(ctx, 1), dg = KernelIO.In(ctx, 2), du = KernelIO.In(ctx, 3), w = KernelIO.In(ctx, 4);
        nint h = KernelIO.Out(ctx, 0, n, k, f), m = KernelIO.Out(ctx, 1, n, f), seed = SwiGluKernels.Seed(ctx, 5, a);
        if (n == 0) return;
        var (ki, ratio, salt) = ((int)k, a.Ratio, a.Salt);
        void*[] args = [&g, &u, &dg, &du, &w, &h, &m, &ki, &f, &seed, &ratio, &salt];
        CudaRtc.Launch($"swiglu_slots_fwd_{KernelIO.CudaSuffix(type)}", (uint)n, Threads, OrtKernelApi.GpuStream(ctx), args);
    }

    public static void Backward(nint ctx, NodeAttrs a, int type)
    {
        var (n, k, f) = SwiGluKernels.Sizes(ctx);
        nint g = KernelIO.In(ctx, 0), u = KernelIO.In(ctx, 1), dg = KernelIO.In(ctx, 2), du = KernelIO.In(ctx, 3), w = KernelIO.In(ctx, 4);
        nint dm = KernelIO.Optional(ctx, 5, "dM", n, f), dh = KernelIO.Optional(ctx, 6, "dH", n, k, f);
        nint ddg = KernelIO.Out(ctx, 0, n, k, f), ddu = KernelIO.Out(ctx, 1, n, k, f);
        nint dgs = KernelIO.Out(ctx, 2, n, f), dus = KernelIO.Out(ctx, 3, n, f), dw = KernelIO.Out(ctx, 4, n, k);
        nint seed = SwiGluKernels.Seed(ctx, 7, a);
        if (n == 0) return;
        var (ki, ratio, salt) = ((int)k, a.Ratio, a.Salt);
        void*[] args = [&g, &u, &dg, &du, &w, &dm, &dh, &ddg, &ddu, &dgs, &dus, &dw, &ki, &f, &seed, &ratio, &salt];
        CudaRtc.Launch($"swiglu_slots_bwd_{KernelIO.CudaSuffix(type)}", (uint)n, Threads, OrtKernelApi.GpuStream(ctx), args);
    }
}
