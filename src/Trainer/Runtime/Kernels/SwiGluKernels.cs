using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.Trainer.Runtime.Kernels;

/// <summary>
/// Kernels of <see cref="GraphBuilder.Ops.SwiGluSlotsOps"/>: SwiGluSlots (G, U, DG, DU, W → H, M) and
/// SwiGluSlotsGrad (G, U, DG, DU, W, dM?, dH? → dDG, dDU, dG, dU, dW). The CPU kernel is plain C# in
/// float32 (<see cref="SwiGluCpu"/>); the CUDA kernels are compiled at first use with NVRTC (<see cref="SwiGluCuda"/>).
/// </summary>
internal static class SwiGluKernels
{
    public const int Float = 1, Float16 = 10, BFloat16 = 16, Int64 = 7;
    public const string Cuda = "CUDAExecutionProvider";

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
        return v != 0 ? OrtKernelApi.Data(v) : throw new InvalidOperationException($"dropout ratio {a.Ratio} needs the seed input");
    }

    /// <summary>N, K, F of a call, checked against every input's shape.</summary>
    public static (long N, long K, long F) Sizes(nint ctx)
    {
        var (_, dg) = OrtKernelApi.TypeAndShape(OrtKernelApi.Input(ctx, 2));
        if (dg.Length != 3) throw new InvalidOperationException($"DG must be (N, K, F); got ({string.Join(", ", dg)})");
        var (n, k, f) = (dg[0], dg[1], dg[2]);
        Expect(ctx, 0, "G", n, f);
        Expect(ctx, 1, "U", n, f);
        Expect(ctx, 3, "DU", n, k, f);
        Expect(ctx, 4, "W", n, k);
        if (k > GraphBuilder.Ops.SwiGluSlotsOps.MaxSlots) throw new InvalidOperationException($"at most {GraphBuilder.Ops.SwiGluSlotsOps.MaxSlots} slots per token; got K = {k}");
        return (n, k, f);
    }

    private static void Expect(nint ctx, int i, string name, params long[] dims)
    {
        var (_, shape) = OrtKernelApi.TypeAndShape(OrtKernelApi.Input(ctx, i));
        if (!shape.SequenceEqual(dims)) throw new InvalidOperationException($"{name} must be ({string.Join(", ", dims)}); got ({string.Join(", ", shape)})");
    }

    /// <summary>The optional input i (dM or dH) when present, checked against its shape.</summary>
    public static nint Optional(nint ctx, int i, string name, params long[] dims)
    {
        if (i >= OrtKernelApi.InputCount(ctx)) return 0;
        var v = OrtKernelApi.Input(ctx, i);
        if (v == 0) return 0;
        Expect(ctx, i, name, dims);
        return OrtKernelApi.Data(v);
    }

    public static nint In(nint ctx, int i) => OrtKernelApi.Data(OrtKernelApi.Input(ctx, i));

    public static nint Out(nint ctx, int i, params long[] dims) => OrtKernelApi.Data(OrtKernelApi.Output(ctx, i, dims));

    public static DType DTypeOf(int onnxType) => onnxType switch
    {
        Float => DType.Float32,
        Float16 => DType.Float16,
        BFloat16 => DType.BFloat16,
        _ => throw new InvalidOperationException($"no SwiGluSlots kernel for element type {onnxType}"),
    };
}
