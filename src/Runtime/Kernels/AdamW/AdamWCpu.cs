using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace MixLoRA.Runtime.Kernels;

/// <summary>
/// The <see cref="GraphBuilder.Ops.AdamWOps"/> kernel in float32 on the CPU: one pass over P, G, M, V (Vector256, a
/// scalar tail), each element's operations those of the composed graph in its order (no fused multiply-adds), so
/// the update is bit for bit the composed one. Element i is read before it is written, so the trainer may bind the
/// outputs to the inputs' memory (in place).
/// </summary>
internal static unsafe class AdamWCpu
{
    /// <summary>Elements per parallel work item.</summary>
    private const int Block = 1 << 14;

    public static IEnumerable<KernelSpec> Specs()
    {
        const int F = KernelIO.Float;
        yield return new("AdamWStep", null, [F, F, F, F, F, F, F, F, F, F, F, F, F], 12, [F, F, F], (ctx, _) => Compute(ctx));
    }

    /// <summary>The scalar inputs (inputs 4–12, in <see cref="GraphBuilder.Ops.AdamWOps"/>'s order); Decay is 1 when absent.</summary>
    private readonly record struct K(float Scale, float StepSize, float Bc2Sqrt, float B1, float OneMinusB1, float B2, float OneMinusB2, float Eps, bool HasDecay, float Decay);

    private static void Compute(nint ctx)
    {
        var dims = KernelIO.Dims(ctx, 0);
        for (var i = 1; i < 4; i++) KernelIO.Expect(ctx, i, GraphBuilder.Ops.AdamWOps.AdamWStepOp.OpType + " input " + i, dims);
        float S(int i) => *(float*)KernelIO.In(ctx, i);
        var decay = (float*)KernelIO.Optional(ctx, 12, "decay");
        var k = new K(S(4), S(5), S(6), S(7), S(8), S(9), S(10), S(11), decay != null, decay == null ? 1f : *decay);
        var n = dims.Aggregate(1L, (a, d) => a * d);
        float* p = (float*)KernelIO.In(ctx, 0), g = (float*)KernelIO.In(ctx, 1), m = (float*)KernelIO.In(ctx, 2), v = (float*)KernelIO.In(ctx, 3);
        float* po = (float*)KernelIO.Out(ctx, 0, dims), mo = (float*)KernelIO.Out(ctx, 1, dims), vo = (float*)KernelIO.Out(ctx, 2, dims);
        CpuParallel.Rows(ctx, (n + Block - 1) / Block, Block, 0, (b, _) =>
        {
            var from = b * Block;
            Update(k, from, Math.Min(n, from + Block), p, g, m, v, po, mo, vo);
        });
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Update(K k, long from, long to, float* p, float* g, float* m, float* v, float* po, float* mo, float* vo)
    {
        var i = from;
        if (Vector256.IsHardwareAccelerated)
        {
            var (scale, stepSize, bc2, b1, c1, b2, c2, eps, decay) = (Vector256.Create(k.Scale), Vector256.Create(k.StepSize), Vector256.Create(k.Bc2Sqrt),
                Vector256.Create(k.B1), Vector256.Create(k.OneMinusB1), Vector256.Create(k.B2), Vector256.Create(k.OneMinusB2), Vector256.Create(k.Eps), Vector256.Create(k.Decay));
            for (; i + 8 <= to; i += 8)
            {
                var gs = Vector256.Load(g + i) * scale;
                var pv = Vector256.Load(p + i);
                if (k.HasDecay) pv *= decay;
                var mv = (Vector256.Load(m + i) * b1) + (gs * c1);
                var vv = (Vector256.Load(v + i) * b2) + ((gs * gs) * c2);
                var denom = (Vector256.Sqrt(vv) / bc2) + eps;
                (pv - ((mv / denom) * stepSize)).Store(po + i);
                mv.Store(mo + i);
                vv.Store(vo + i);
            }
        }
        for (; i < to; i++)
        {
            var gs = g[i] * k.Scale;
            var pv = k.HasDecay ? p[i] * k.Decay : p[i];
            var mv = (m[i] * k.B1) + (gs * k.OneMinusB1);
            var vv = (v[i] * k.B2) + ((gs * gs) * k.OneMinusB2);
            var denom = (MathF.Sqrt(vv) / k.Bc2Sqrt) + k.Eps;
            (po[i], mo[i], vo[i]) = (pv - ((mv / denom) * k.StepSize), mv, vv);
        }
    }
}
