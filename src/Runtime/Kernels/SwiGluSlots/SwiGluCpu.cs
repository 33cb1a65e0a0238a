using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace MixLoRA.Runtime.Kernels;

/// <summary>
/// The SwiGluSlots kernels in float32 on the CPU, parallel over tokens, each token's slots in one fused pass over F
/// (Vector256, a scalar tail). Per token n, slot j: g = G + DG, u = U + DU, s = σ(g), h = g·s·u, H = h, M = Σ_j W_j h;
/// backward with dh = W_j dM + dH: dDU = dh·g·s, dDG = dh·u·s·(1 + g(1 − s)), dG = Σ_j dDG, dU = Σ_j dDU,
/// dW_j = Σ_f dM·h. Dropout (on H, and on dH in the backward) multiplies by a <see cref="DropoutMask"/> row.
/// It is also the reference the CUDA kernels are checked against (mixlora-doctor --kernels).
/// </summary>
internal static unsafe class SwiGluCpu
{
    public static void Forward(nint ctx, NodeAttrs a)
    {
        var (n, k, f) = SwiGluKernels.Sizes(ctx);
        var drop = DropoutMask.Of(SwiGluKernels.Seed(ctx, 5, a), a.Ratio, a.Salt);
        var p = new Ptrs((float*)KernelIO.In(ctx, 0), (float*)KernelIO.In(ctx, 1), (float*)KernelIO.In(ctx, 2), (float*)KernelIO.In(ctx, 3), (float*)KernelIO.In(ctx, 4));
        var h = (float*)KernelIO.Out(ctx, 0, n, k, f);
        var m = (float*)KernelIO.Out(ctx, 1, n, f);
        CpuParallel.Rows(ctx, n, k * f, (int)f, (t, s) => ForwardToken(p, h, m, t, (int)k, (int)f, drop, s));
    }

    public static void Backward(nint ctx, NodeAttrs a)
    {
        var (n, k, f) = SwiGluKernels.Sizes(ctx);
        var drop = DropoutMask.Of(SwiGluKernels.Seed(ctx, 7, a), a.Ratio, a.Salt);
        var p = new Ptrs((float*)KernelIO.In(ctx, 0), (float*)KernelIO.In(ctx, 1), (float*)KernelIO.In(ctx, 2), (float*)KernelIO.In(ctx, 3), (float*)KernelIO.In(ctx, 4));
        var dm = (float*)KernelIO.Optional(ctx, 5, "dM", n, f);
        var dh = (float*)KernelIO.Optional(ctx, 6, "dH", n, k, f);
        var o = new Ptrs((float*)KernelIO.Out(ctx, 2, n, f), (float*)KernelIO.Out(ctx, 3, n, f), (float*)KernelIO.Out(ctx, 0, n, k, f),
            (float*)KernelIO.Out(ctx, 1, n, k, f), (float*)KernelIO.Out(ctx, 4, n, k));   // laid out like the inputs they are for
        CpuParallel.Rows(ctx, n, k * f, (int)f, (t, s) => BackwardToken(p, dm, dh, o, t, (int)k, (int)f, drop, s));
    }

    /// <summary>G, U (N, F), DG, DU (N, K, F), W (N, K) (or the gradients laid out like them).</summary>
    private readonly struct Ptrs(float* g, float* u, float* dg, float* du, float* w)
    {
        public readonly float* G = g, U = u, DG = dg, DU = du, W = w;
    }

    private const int L = 8;                                                              // Vector256<float> lanes

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Sigmoid(Vector256<float> g) => Vector256<float>.One / (Vector256<float>.One + Vector256.Exp(-g));

    private static float Sigmoid(float g) => 1f / (1f + MathF.Exp(-g));

    /// <summary>One token's slots; mult (F floats) holds a slot's dropout multipliers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ForwardToken(Ptrs p, float* h, float* m, long n, int k, int f, DropoutMask drop, Span<float> mult)
    {
        float* gRow = p.G + (n * f), uRow = p.U + (n * f), mix = m + (n * f);
        fixed (float* keep = mult)
        {
            for (var j = 0; j < k; j++)
            {
                var i = (n * k) + j;
                float* dg = p.DG + (i * f), du = p.DU + (i * f), hj = h + (i * f);
                var w = p.W[i];
                if (drop.On || j == 0) drop.Fill(i * f, mult);                              // without dropout: ones, filled once
                var c = 0;
                for (; c + L <= f; c += L)
                {
                    var g = Vector256.Load(gRow + c) + Vector256.Load(dg + c);
                    var hv = g * Sigmoid(g) * (Vector256.Load(uRow + c) + Vector256.Load(du + c));   // h = g·σ(g)·u
                    var mv = Vector256.Create(w) * hv;                                                // M += w_j h (before dropout)
                    (j == 0 ? mv : Vector256.Load(mix + c) + mv).Store(mix + c);
                    (hv * Vector256.Load(keep + c)).Store(hj + c);
                }
                for (; c < f; c++)
                {
                    var g = gRow[c] + dg[c];
                    var hs = g * Sigmoid(g) * (uRow[c] + du[c]);
                    mix[c] = j == 0 ? w * hs : mix[c] + (w * hs);
                    hj[c] = hs * keep[c];
                }
            }
        }
    }

    /// <summary>One token's slots; mult (F floats) holds a slot's dropout multipliers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BackwardToken(Ptrs p, float* dm, float* dh, Ptrs o, long n, int k, int f, DropoutMask drop, Span<float> mult)
    {
        float* gRow = p.G + (n * f), uRow = p.U + (n * f), sg = o.G + (n * f), su = o.U + (n * f);
        var dmRow = dm == null ? null : dm + (n * f);
        fixed (float* keep = mult)
        {
            for (var j = 0; j < k; j++)
            {
                var i = (n * k) + j;
                float* dg = p.DG + (i * f), du = p.DU + (i * f), ddg = o.DG + (i * f), ddu = o.DU + (i * f);
                var dhj = dh == null ? null : dh + (i * f);
                var w = p.W[i];
                if (dhj != null) drop.Fill(i * f, mult);                                   // the forward's mask on dH
                var dw = Vector256<float>.Zero;
                var c = 0;
                for (; c + L <= f; c += L)
                {
                    var g = Vector256.Load(gRow + c) + Vector256.Load(dg + c);
                    var u = Vector256.Load(uRow + c) + Vector256.Load(du + c);
                    var s = Sigmoid(g);
                    var a = g * s;                                                           // a = g·σ(g)
                    var d = dhj == null ? Vector256<float>.Zero : Vector256.Load(dhj + c) * Vector256.Load(keep + c);
                    if (dmRow != null)
                    {
                        var dmv = Vector256.Load(dmRow + c);
                        dw += dmv * a * u;                                                    // dW_j = Σ_f dM·h
                        d += Vector256.Create(w) * dmv;                                       // d = w_j dM + mask·dH
                    }
                    var vu = d * a;                                                          // dDU = d·g·s
                    var vg = d * u * s * (Vector256<float>.One + (g * (Vector256<float>.One - s)));   // dDG = d·u·s·(1 + g(1 − s))
                    vg.Store(ddg + c);
                    vu.Store(ddu + c);
                    (j == 0 ? vg : Vector256.Load(sg + c) + vg).Store(sg + c);
                    (j == 0 ? vu : Vector256.Load(su + c) + vu).Store(su + c);
                }
                var dws = Vector256.Sum(dw);
                for (; c < f; c++)
                {
                    var g = gRow[c] + dg[c];
                    var u = uRow[c] + du[c];
                    var s = Sigmoid(g);
                    var a = g * s;
                    var d = dhj == null ? 0f : dhj[c] * keep[c];
                    if (dmRow != null)
                    {
                        dws += dmRow[c] * a * u;
                        d += w * dmRow[c];
                    }
                    var (vu, vg) = (d * a, d * u * s * (1f + (g * (1f - s))));
                    (ddg[c], ddu[c]) = (vg, vu);
                    (sg[c], su[c]) = j == 0 ? (vg, vu) : (sg[c] + vg, su[c] + vu);
                }
                o.W[i] = dmRow == null ? 0f : dws;
            }
        }
    }
}
