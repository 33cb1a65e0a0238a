using MixLoRA.GraphBuilder;

namespace MixLoRA.Runtime.Kernels;

/// <summary>
/// Kernels of <see cref="GraphBuilder.Ops.SwiGluSlotsOps"/>: SwiGluSlots (G, U, DG, DU, W → H, M) and
/// SwiGluSlotsGrad (G, U, DG, DU, W, dM?, dH? → dDG, dDU, dG, dU, dW). The CPU kernel is plain C# in
/// float32 (<see cref="SwiGluCpu"/>); the CUDA kernels are compiled at first use with NVRTC (<see cref="SwiGluCuda"/>).
/// </summary>
internal static class SwiGluKernels
{
    private const int Float = KernelIO.Float, Float16 = KernelIO.Float16, BFloat16 = KernelIO.BFloat16, Int64 = KernelIO.Int64;
    private const string Cuda = KernelIO.Cuda;

    public static IEnumerable<KernelSpec> Specs()
    {
        yield return Forward(Float, null, SwiGluCpu.Forward);
        yield return Backward(Float, null, SwiGluCpu.Backward);
        foreach (var t in new[] { BFloat16, Float16, Float })
        {
            yield return Forward(t, Cuda, (ctx, a) => SwiGluCuda.Forward(ctx, a, t));
            yield return Backward(t, Cuda, (ctx, a) => SwiGluCuda.Backward(ctx, a, t));
        }
    }

    // inputs G, U, DG, DU, W [, seed]; the backward's G, U, DG, DU, W [, dM, dH, seed]
    private static KernelSpec Forward(int t, string? provider, Action<nint, NodeAttrs> compute) =>
        new("SwiGluSlots", provider, [t, t, t, t, Float, Int64], 5, [t, t], compute);

    private static KernelSpec Backward(int t, string? provider, Action<nint, NodeAttrs> compute) =>
        new("SwiGluSlotsGrad", provider, [t, t, t, t, Float, t, t, Int64], 5, [t, t, t, t, Float], compute);

    /// <summary>The dropout seed input (index <paramref name="i"/>) when the node drops (ratio &gt; 0), else 0.</summary>
    public static nint Seed(nint ctx, int i, NodeAttrs a)
    {
        if (a.Ratio <= 0) return 0;
        var v = i < OrtKernelApi.InputCount(ctx) ? OrtKernelApi.Input(ctx, i) : 0;
        return v != 0 ? OrtKernelApi.Data(v) : throw Fail.Bug($"dropout ratio {a.Ratio} needs the seed input");
    }

    /// <summary>N, K, F of a call, checked against every input's shape.</summary>
    public static (long N, long K, long F) Sizes(nint ctx)
    {
        var dg = KernelIO.Dims(ctx, 2);
        if (dg.Length != 3) throw Fail.Bug($"DG must be (N, K, F); got ({string.Join(", ", dg)})");
        var (n, k, f) = (dg[0], dg[1], dg[2]);
        KernelIO.Expect(ctx, 0, "G", n, f);
        KernelIO.Expect(ctx, 1, "U", n, f);
        KernelIO.Expect(ctx, 3, "DU", n, k, f);
        KernelIO.Expect(ctx, 4, "W", n, k);
        if (k > GraphBuilder.Ops.SwiGluSlotsOps.MaxSlots) throw Fail.Bug($"at most {GraphBuilder.Ops.SwiGluSlotsOps.MaxSlots} slots per token; got K = {k}");
        return (n, k, f);
    }
}
