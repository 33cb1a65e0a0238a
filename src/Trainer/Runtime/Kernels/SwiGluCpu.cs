namespace MixLoRA.Trainer.Runtime.Kernels;

/// <summary>
/// The SwiGluSlots kernels in float32 on the CPU, parallel over tokens. Per token n, slot j, column f:
/// g = G + DG, u = U + DU, s = σ(g), h = g·s·u, H = h, M = Σ_j W_j h; backward with dh = W_j dM + dH:
/// dDU = dh·g·s, dDG = dh·u·s·(1 + g(1 − s)), dG = Σ_j dDG, dU = Σ_j dDU, dW_j = Σ_f dM·h.
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
        Run(n, k * f, t => ForwardToken(p, h, m, t, (int)k, f, drop));
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
        Run(n, k * f, t => BackwardToken(p, dm, dh, o, t, (int)k, f, drop));
    }

    private readonly record struct Ptrs(nint G, nint U, nint DG, nint DU, nint W);

    /// <summary>Dropout of H: element i is kept (× Scale) when <see cref="GraphBuilder.Ops.SwiGluSlotsOps.Keep"/> says so.</summary>
    private readonly record struct Dropout(bool On, long Seed, long Salt, float Ratio, float Scale)
    {
        public static Dropout Of(nint seed, NodeAttrs a) => seed == 0 ? default : new(true, *(long*)seed, a.Salt, a.Ratio, 1f / (1f - a.Ratio));

        public float Apply(long i, float v) => !On ? v : GraphBuilder.Ops.SwiGluSlotsOps.Keep(Seed, Salt, i, Ratio) ? v * Scale : 0f;
    }

    private static void Run(long tokens, long perToken, Action<long> token)
    {
        if (tokens * perToken < 1 << 16)
        {
            for (long t = 0; t < tokens; t++) token(t);
        }
        else
        {
            Parallel.For(0L, tokens, token);
        }
    }

    private static float Sigmoid(float x) => 1f / (1f + MathF.Exp(-x));

    private static void ForwardToken(Ptrs p, float* h, float* m, long n, int k, long f, Dropout drop)
    {
        float* gp = (float*)p.G + (n * f), up = (float*)p.U + (n * f), dgp = (float*)p.DG, dup = (float*)p.DU, w = (float*)p.W + (n * k);
        for (long c = 0; c < f; c++)
        {
            var mix = 0f;
            for (var j = 0; j < k; j++)
            {
                var i = ((n * k) + j) * f + c;
                var g = gp[c] + dgp[i];
                var hv = g * Sigmoid(g) * (up[c] + dup[i]);
                h[i] = drop.Apply(i, hv);
                mix += w[j] * hv;
            }
            m[(n * f) + c] = mix;
        }
    }

    private static void BackwardToken(Ptrs p, float* dm, float* dh, Ptrs o, long n, int k, long f, Dropout drop)
    {
        float* odg = (float*)o.G, odu = (float*)o.U, oddg = (float*)o.DG, oddu = (float*)o.DU, odw = (float*)o.W;
        float* gp = (float*)p.G + (n * f), up = (float*)p.U + (n * f), dgp = (float*)p.DG, dup = (float*)p.DU, w = (float*)p.W + (n * k);
        Span<float> dw = stackalloc float[k];
        for (long c = 0; c < f; c++)
        {
            var (sg, su) = (0f, 0f);
            var dmv = dm == null ? 0f : dm[(n * f) + c];
            for (var j = 0; j < k; j++)
            {
                var i = ((n * k) + j) * f + c;
                var (g, u) = (gp[c] + dgp[i], up[c] + dup[i]);
                var s = Sigmoid(g);
                var a = g * s;
                dw[j] += dmv * a * u;
                var d = (w[j] * dmv) + (dh == null ? 0f : drop.Apply(i, dh[i]));
                var (ddg, ddu) = (d * u * s * (1 + (g * (1 - s))), d * a);
                oddg[i] = ddg;
                oddu[i] = ddu;
                (sg, su) = (sg + ddg, su + ddu);
            }
            odg[(n * f) + c] = sg;
            odu[(n * f) + c] = su;
        }
        for (var j = 0; j < k; j++) odw[(n * k) + j] = dw[j];
    }
}
