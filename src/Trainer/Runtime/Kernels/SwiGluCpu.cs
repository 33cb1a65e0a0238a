using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.Trainer.Runtime.Kernels;

/// <summary>
/// The SwiGluSlots kernels in float32 on the CPU, vectorised along F (TensorPrimitives) and parallel over
/// tokens. Per token n, slot j: g = G + DG, u = U + DU, s = σ(g), h = g·s·u, H = h, M = Σ_j W_j h; backward
/// with dh = W_j dM + dH: dDU = dh·g·s, dDG = dh·u·s·(1 + g(1 − s)), dG = Σ_j dDG, dU = Σ_j dDU, dW_j = Σ_f dM·h.
/// It is also the reference the CUDA kernels are checked against (mixlora-doctor --kernels).
/// </summary>
internal static unsafe class SwiGluCpu
{
    public static void Forward(nint ctx, NodeAttrs a)
    {
        var (n, k, f) = SwiGluKernels.Sizes(ctx);
        var drop = Dropout.Of(SwiGluKernels.Seed(ctx, 5, a), a);
        var p = new Ptrs(KernelIO.In(ctx, 0), KernelIO.In(ctx, 1), KernelIO.In(ctx, 2), KernelIO.In(ctx, 3), KernelIO.In(ctx, 4));
        var h = (float*)KernelIO.Out(ctx, 0, n, k, f);
        var m = (float*)KernelIO.Out(ctx, 1, n, f);
        CpuParallel.Rows(ctx, n, k * f, 3 * (int)f, (t, s) => ForwardToken(p, h, m, t, (int)k, (int)f, drop, s));
    }

    public static void Backward(nint ctx, NodeAttrs a)
    {
        var (n, k, f) = SwiGluKernels.Sizes(ctx);
        var drop = Dropout.Of(SwiGluKernels.Seed(ctx, 7, a), a);
        var p = new Ptrs(KernelIO.In(ctx, 0), KernelIO.In(ctx, 1), KernelIO.In(ctx, 2), KernelIO.In(ctx, 3), KernelIO.In(ctx, 4));
        var dm = (float*)KernelIO.Optional(ctx, 5, "dM", n, f);
        var dh = (float*)KernelIO.Optional(ctx, 6, "dH", n, k, f);
        var o = new Ptrs(KernelIO.Out(ctx, 2, n, f), KernelIO.Out(ctx, 3, n, f), KernelIO.Out(ctx, 0, n, k, f),
            KernelIO.Out(ctx, 1, n, k, f), KernelIO.Out(ctx, 4, n, k));                // laid out like the inputs they are for
        CpuParallel.Rows(ctx, n, k * f, 5 * (int)f, (t, s) => BackwardToken(p, dm, dh, o, t, (int)k, (int)f, drop, s));
    }

    private readonly record struct Ptrs(nint G, nint U, nint DG, nint DU, nint W);

    /// <summary>Dropout of H: element i is kept (× Scale) when <see cref="GraphBuilder.Ops.SwiGluSlotsOps.Keep"/> says so.</summary>
    private readonly record struct Dropout(bool On, ulong Start, ulong Threshold, float Scale)
    {
        public static Dropout Of(nint seed, NodeAttrs a) => seed == 0 ? default
            : new(true, SwiGluSlotsOps.Start(*(long*)seed, a.Salt), SwiGluSlotsOps.Threshold(a.Ratio), 1f / (1f - a.Ratio));

        /// <summary>v[c] ← mask(first + c) · v[c] · Scale (a no-op without dropout); the integer form of <see cref="SwiGluSlotsOps.Keep"/>.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Apply(long first, Span<float> v)
        {
            if (!On) return;
            for (var c = 0; c < v.Length; c++) v[c] = SwiGluSlotsOps.Bits(Start, first + c) >= Threshold ? v[c] * Scale : 0f;
        }
    }

    private static Span<float> Row(nint p, long row, int f) => new((float*)p + (row * f), f);

    /// <summary>One token's slots; scratch holds g, u, s (3F floats).</summary>
    private static void ForwardToken(Ptrs p, float* h, float* m, long n, int k, int f, Dropout drop, Span<float> scratch)
    {
        Span<float> g = scratch[..f], u = scratch.Slice(f, f), s = scratch.Slice(2 * f, f);
        var mix = new Span<float>(m + (n * f), f);
        mix.Clear();
        var w = (float*)p.W + (n * k);
        for (var j = 0; j < k; j++)
        {
            var i = (n * k) + j;
            var hj = new Span<float>(h + (i * f), f);
            TensorPrimitives.Add(Row(p.G, n, f), Row(p.DG, i, f), g);
            TensorPrimitives.Add(Row(p.U, n, f), Row(p.DU, i, f), u);
            TensorPrimitives.Sigmoid(g, s);
            TensorPrimitives.Multiply(g, s, hj);
            TensorPrimitives.Multiply(hj, u, hj);                                          // h = g·σ(g)·u
            TensorPrimitives.MultiplyAdd(hj, w[j], mix, mix);                              // M += w_j h (before dropout)
            drop.Apply(i * f, hj);
        }
    }

    /// <summary>One token's slots; scratch holds g, u, s, a = g·s and d (5F floats).</summary>
    private static void BackwardToken(Ptrs p, float* dm, float* dh, Ptrs o, long n, int k, int f, Dropout drop, Span<float> scratch)
    {
        Span<float> g = scratch[..f], u = scratch.Slice(f, f), s = scratch.Slice(2 * f, f), a = scratch.Slice(3 * f, f), d = scratch.Slice(4 * f, f);
        Span<float> sg = Row(o.G, n, f), su = Row(o.U, n, f);
        sg.Clear();
        su.Clear();
        var dmRow = dm == null ? default : new Span<float>(dm + (n * f), f);
        var w = (float*)p.W + (n * k);
        for (var j = 0; j < k; j++)
        {
            var i = (n * k) + j;
            Span<float> ddg = Row(o.DG, i, f), ddu = Row(o.DU, i, f);
            TensorPrimitives.Add(Row(p.G, n, f), Row(p.DG, i, f), g);
            TensorPrimitives.Add(Row(p.U, n, f), Row(p.DU, i, f), u);
            TensorPrimitives.Sigmoid(g, s);
            TensorPrimitives.Multiply(g, s, a);                                            // a = g·σ(g)
            if (dh == null) d.Clear();
            else
            {
                new Span<float>(dh + (i * f), f).CopyTo(d);
                drop.Apply(i * f, d);                                                      // the forward's mask on dH
            }
            if (dm != null)
            {
                TensorPrimitives.Multiply(a, u, ddu);                                      // h (ddu as scratch)
                ((float*)o.W)[i] = TensorPrimitives.Dot(dmRow, ddu);                       // dW_j = Σ_f dM·h
                TensorPrimitives.MultiplyAdd(dmRow, w[j], d, d);                           // d = w_j dM + mask·dH
            }
            TensorPrimitives.Multiply(d, a, ddu);                                          // dDU = d·g·s
            TensorPrimitives.Subtract(1f, s, ddg);
            TensorPrimitives.MultiplyAdd(ddg, g, 1f, ddg);                                 // 1 + g(1 − s)
            TensorPrimitives.Multiply(ddg, s, ddg);
            TensorPrimitives.Multiply(ddg, u, ddg);
            TensorPrimitives.Multiply(ddg, d, ddg);                                        // dDG = d·u·s·(1 + g(1 − s))
            TensorPrimitives.Add(sg, ddg, sg);
            TensorPrimitives.Add(su, ddu, su);
        }
        if (dm == null) new Span<float>((float*)o.W + (n * k), k).Clear();
    }
}
