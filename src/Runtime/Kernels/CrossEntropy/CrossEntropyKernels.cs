using System.Numerics.Tensors;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Runtime.Kernels;

/// <summary>
/// Kernels of <see cref="GraphBuilder.Ops.CrossEntropyOps"/>: SoftmaxCrossEntropy (logits (N, V), targets (N)
/// → nll, lse (N) float32) and SoftmaxCrossEntropyGrad (logits, targets, lse, dnll → dlogits). CPU in C#
/// (float32 logits); CUDA one block per row (an online max/sum-exp pass forward, one pass backward).
/// </summary>
internal static unsafe class CrossEntropyKernels
{
    private const int Threads = 512;

    public static IEnumerable<KernelSpec> Specs()
    {
        const int F = KernelIO.Float;
        yield return new("SoftmaxCrossEntropy", null, [F, KernelIO.Int64], 2, [F, F], (ctx, _) => CpuForward(ctx));
        yield return new("SoftmaxCrossEntropyGrad", null, [F, KernelIO.Int64, F, F], 4, [F], (ctx, _) => CpuBackward(ctx));
        foreach (var t in new[] { KernelIO.BFloat16, KernelIO.Float16, F })
        {
            yield return new("SoftmaxCrossEntropy", KernelIO.Cuda, [t, KernelIO.Int64], 2, [F, F], (ctx, _) => CudaForward(ctx, t));
            yield return new("SoftmaxCrossEntropyGrad", KernelIO.Cuda, [t, KernelIO.Int64, F, F], 4, [t], (ctx, _) => CudaBackward(ctx, t));
        }
    }

    private static (long N, long V) Sizes(nint ctx)
    {
        var (x, t) = (KernelIO.Dims(ctx, 0), KernelIO.Dims(ctx, 1));
        if (x.Length != 2 || t.Length != 1 || t[0] != x[0]) throw Fail.Bug($"logits (N, V) and targets (N) expected; got ({string.Join(", ", x)}) and ({string.Join(", ", t)})");
        return (x[0], x[1]);
    }

    private static void CpuForward(nint ctx)
    {
        var (n, v) = Sizes(ctx);
        var x = (float*)KernelIO.In(ctx, 0);
        var t = (long*)KernelIO.In(ctx, 1);
        float* nll = (float*)KernelIO.Out(ctx, 0, n), lse = (float*)KernelIO.Out(ctx, 1, n);
        CpuParallel.Rows(ctx, n, v, (int)v, (r, e) =>
        {
            var row = new ReadOnlySpan<float>(x + (r * v), (int)v);
            var max = TensorPrimitives.Max(row);
            TensorPrimitives.Subtract(row, max, e);
            TensorPrimitives.Exp(e, e);
            lse[r] = max + MathF.Log(TensorPrimitives.Sum<float>(e));
            nll[r] = t[r] >= 0 && t[r] < v ? lse[r] - row[(int)t[r]] : 0f;
        });
    }

    /// <summary>dx = (softmax(x) − onehot(t)) · dnll per row; 0 for ignored rows (targets outside [0, V)).</summary>
    private static void CpuBackward(nint ctx)
    {
        var (n, v) = Sizes(ctx);
        float* x = (float*)KernelIO.In(ctx, 0), lse = (float*)KernelIO.In(ctx, 2), dnll = (float*)KernelIO.In(ctx, 3);
        var t = (long*)KernelIO.In(ctx, 1);
        var dx = (float*)KernelIO.Out(ctx, 0, n, v);
        CpuParallel.Rows(ctx, n, v, 0, (r, _) =>
        {
            var d = new Span<float>(dx + (r * v), (int)v);
            if (t[r] < 0 || t[r] >= v)
            {
                d.Clear();
                return;
            }
            TensorPrimitives.Subtract(new ReadOnlySpan<float>(x + (r * v), (int)v), lse[r], d);
            TensorPrimitives.Exp(d, d);
            d[(int)t[r]] -= 1f;
            TensorPrimitives.Multiply(d, dnll[r], d);
        });
    }

    private static void CudaForward(nint ctx, int type)
    {
        var (n, v) = Sizes(ctx);
        nint x = KernelIO.In(ctx, 0), t = KernelIO.In(ctx, 1), nll = KernelIO.Out(ctx, 0, n), lse = KernelIO.Out(ctx, 1, n);
        if (n == 0) return;
        void*[] args = [&x, &t, &nll, &lse, &v];
        CudaRtc.Launch($"softmax_ce_fwd_{KernelIO.CudaSuffix(type)}", (uint)n, Threads, OrtKernelApi.GpuStream(ctx), args);
    }

    private static void CudaBackward(nint ctx, int type)
    {
        var (n, v) = Sizes(ctx);
        nint x = KernelIO.In(ctx, 0), t = KernelIO.In(ctx, 1), lse = KernelIO.In(ctx, 2), dnll = KernelIO.In(ctx, 3);
        nint dx = KernelIO.Out(ctx, 0, n, v);
        if (n == 0) return;
        void*[] args = [&x, &t, &lse, &dnll, &dx, &v];
        CudaRtc.Launch($"softmax_ce_bwd_{KernelIO.CudaSuffix(type)}", (uint)n, Threads, OrtKernelApi.GpuStream(ctx), args);
    }
}
