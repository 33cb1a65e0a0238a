using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Runtime.Kernels;

/// <summary>
/// The <see cref="GraphBuilder.Ops.SlotLoraOps"/> kernels in float32 on the CPU: SlotLora (X, A, B, Experts → Y) and
/// SlotLoraGrad (X, A, B, Experts, dY → dX, dA, dB). Slots are sorted by expert (a counting sort) and every product is a
/// <see cref="CpuBlas.Gemm"/> over one expert's slots, with A_eᵀ (in, R) and B_eᵀ (R, out) laid out once per call.
/// The forward runs in parallel over blocks of one expert's slots; the backward over experts, so each thread owns its
/// expert's dA and dB rows; per-slot dx rows are summed over a token's slots afterwards when X is shared.
/// </summary>
internal static unsafe class SlotLoraCpu
{
    public static IEnumerable<KernelSpec> Specs()
    {
        const int F = KernelIO.Float, I = KernelIO.Int64;
        yield return new("SlotLora", null, [F, F, F, I], 4, [F], Forward);
        yield return new("SlotLoraGrad", null, [F, F, F, I, F], 5, [F, F, F], Backward);
    }

    /// <summary>Sizes and pointers of one call; X rows are per slot when <see cref="PerSlot"/>.</summary>
    private readonly record struct Call(long N, int K, int In, int Out, int R, int E, bool PerSlot, float Scale, nint X, nint A, nint B, nint Experts)
    {
        public long Slots => N * K;

        /// <summary>Slot's X row (in).</summary>
        public float* XPtr(long slot) => (float*)X + ((PerSlot ? slot : slot / K) * In);

        public static Call Of(nint ctx, NodeAttrs a)
        {
            var (x, ad, bd, ed) = (KernelIO.Dims(ctx, 0), KernelIO.Dims(ctx, 1), KernelIO.Dims(ctx, 2), KernelIO.Dims(ctx, 3));
            var r = (int)a.Rank;
            if (ed.Length != 2 || ad.Length != 2 || bd.Length != 2 || x.Length is not (2 or 3) || r < 1 || ad[0] % r != 0 || bd[1] != ad[0] || x[^1] != ad[1]
                || x[0] != ed[0] || (x.Length == 3 && x[1] != ed[1]))
                throw Fail.Bug($"SlotLora takes X (N, in) or (N, K, in), A (E·R, in), B (out, E·R), experts (N, K) with R = {r}; got X ({string.Join(", ", x)}), A ({string.Join(", ", ad)}), B ({string.Join(", ", bd)}), experts ({string.Join(", ", ed)})");
            var call = new Call(ed[0], (int)ed[1], (int)ad[1], (int)bd[0], r, (int)(ad[0] / r), x.Length == 3, a.Scale,
                KernelIO.In(ctx, 0), KernelIO.In(ctx, 1), KernelIO.In(ctx, 2), KernelIO.In(ctx, 3));
            foreach (var e in new ReadOnlySpan<long>((long*)call.Experts, (int)call.Slots))
            {
                if (e < 0 || e >= call.E) throw Fail.Bug($"SlotLora expert index {e} is outside [0, {call.E})");
            }
            return call;
        }
    }

    /// <summary>
    /// Per-expert contiguous copies in native memory (the GEMMs take raw pointers, which a managed array would not
    /// keep valid across a GC): Aᵀ blocks (E, in, R) and, for the forward, Bᵀ blocks (E, R, out).
    /// </summary>
    private sealed class Layouts : IDisposable
    {
        private readonly Call _c;
        private readonly float* _at, _bt;

        public Layouts(Call c, bool withB)
        {
            _c = c;
            var (nat, nbt) = ((long)c.E * c.In * c.R, (long)c.E * c.R * c.Out);
            _at = (float*)NativeMemory.Alloc((nuint)Math.Max(1, nat), sizeof(float));
            _bt = withB ? (float*)NativeMemory.Alloc((nuint)Math.Max(1, nbt), sizeof(float)) : null;
            if (withB) CpuBlas.Transpose(new ReadOnlySpan<float>((float*)c.B, c.Out * c.E * c.R), c.Out, c.E * c.R, new Span<float>(_bt, (int)nbt));   // Bᵀ (E·R, out): expert e's R rows are B_eᵀ
            for (var e = 0; e < c.E; e++)
                CpuBlas.Transpose(new ReadOnlySpan<float>((float*)c.A + ((long)e * c.R * c.In), c.R * c.In), c.R, c.In, new Span<float>(AT(e), c.In * c.R));   // (R, in) → (in, R)
        }

        public float* AT(int e) => _at + ((long)e * _c.In * _c.R);

        public float* BT(int e) => _bt + ((long)e * _c.R * _c.Out);

        public void Dispose()
        {
            NativeMemory.Free(_at);
            NativeMemory.Free(_bt);
        }
    }

    /// <summary>Up to this many of one expert's slots per forward work item (rows of one pair of GEMMs).</summary>
    private const int Block = 64;

    private static void Forward(nint ctx, NodeAttrs attrs)
    {
        var c = Call.Of(ctx, attrs);
        var y = (float*)KernelIO.Out(ctx, 0, c.N, c.K, c.Out);
        using var l = new Layouts(c, withB: true);
        var order = ByExpert(c, out var start);
        var items = new List<(int E, int From, int To)>();
        for (var e = 0; e < c.E; e++)
            for (var i = start[e]; i < start[e + 1]; i += Block) items.Add((e, i, Math.Min(start[e + 1], i + Block)));
        var z = ArrayPool<float>.Shared.Rent((int)Math.Max(1, c.Slots * c.R));
        try
        {
            fixed (float* zb = z)
            {
                var zs = zb;
                CpuParallel.Rows(ctx, items.Count, (long)Block * c.R * (c.In + c.Out), 0, (t, _) =>
                {
                    var (e, from, to) = items[(int)t];
                    var m = to - from;
                    Span<nint> x = stackalloc nint[m], zr = stackalloc nint[m], yr = stackalloc nint[m];
                    for (var i = 0; i < m; i++)
                    {
                        var s = order[from + i];
                        (x[i], zr[i], yr[i]) = ((nint)c.XPtr(s), (nint)(zs + ((long)(from + i) * c.R)), (nint)(y + (s * c.Out)));
                    }
                    CpuBlas.Gemm(x, zr, c.In, l.AT(e), c.R, c.R, c.Scale);                    // z = s · A_e x
                    CpuBlas.Gemm(zr, yr, c.R, l.BT(e), c.Out, c.Out);                         // y = B_e z
                });
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(z);
        }
    }

    private static void Backward(nint ctx, NodeAttrs attrs)
    {
        var c = Call.Of(ctx, attrs);
        var dy = (float*)KernelIO.In(ctx, 4);
        KernelIO.Expect(ctx, 4, "dY", c.N, c.K, c.Out);
        var dx = (float*)(c.PerSlot ? KernelIO.Out(ctx, 0, c.N, c.K, c.In) : KernelIO.Out(ctx, 0, c.N, c.In));
        var da = (float*)KernelIO.Out(ctx, 1, (long)c.E * c.R, c.In);
        var db = (float*)KernelIO.Out(ctx, 2, c.Out, (long)c.E * c.R);
        var dbt = ArrayPool<float>.Shared.Rent(c.E * c.R * c.Out);
        var slotDx = c.PerSlot ? null : ArrayPool<float>.Shared.Rent((int)(c.Slots * c.In));
        try
        {
            using var l = new Layouts(c, withB: false);
            var order = ByExpert(c, out var start);
            fixed (float* sdx = slotDx, dbtp = dbt)
            {
                var rows = c.PerSlot ? dx : sdx;
                var dbts = dbtp;
                CpuParallel.Rows(ctx, c.E, c.Slots * c.R * (2L * (c.In + c.Out)) / c.E, 0, (e, _) =>
                    Expert(c, l, (int)e, order.AsSpan(start[e], start[e + 1] - start[e]), dy, rows, da, dbts));
                if (!c.PerSlot) SumSlots(ctx, c, sdx, dx);
            }
            CpuBlas.Transpose(dbt.AsSpan(0, c.E * c.R * c.Out), c.E * c.R, c.Out, new Span<float>(db, c.Out * c.E * c.R));   // dB (out, E·R)
        }
        finally
        {
            ArrayPool<float>.Shared.Return(dbt);
            if (slotDx != null) ArrayPool<float>.Shared.Return(slotDx);
        }
    }

    /// <summary>
    /// Expert e's M slots, gathered into contiguous X_e (M, in) and dY_e (M, out): Z = s X_e A_eᵀ and dZ = s dY_e B_e
    /// (M, R), each slot's dx = dZ A_e, dA_e = dZᵀ X_e and dB_eᵀ = Zᵀ dY_e, all as <see cref="CpuBlas.Gemm"/> calls.
    /// </summary>
    private static void Expert(Call c, Layouts l, int e, ReadOnlySpan<int> slots, float* dy, float* dxRows, float* da, float* dbt)
    {
        var m = slots.Length;
        var (er, rIn, rOut) = (c.E * c.R, c.R * c.In, c.R * c.Out);
        var buffer = ArrayPool<float>.Shared.Rent((m * (c.In + c.Out + (4 * c.R))) + 1);
        var ptrs = ArrayPool<nint>.Shared.Rent((4 * m) + (4 * c.R));
        try
        {
            fixed (float* all = buffer)
            {
                float* xs = all, dys = xs + (m * c.In), z = dys + (m * c.Out), dz = z + (m * c.R), zt = dz + (m * c.R), dzt = zt + (m * c.R);
                Span<nint> p = ptrs;
                Span<nint> xr = p[..m], dyr = p.Slice(m, m), zr = p.Slice(2 * m, m), dzr = p.Slice(3 * m, m);
                Span<nint> ztr = p.Slice(4 * m, c.R), dztr = p.Slice((4 * m) + c.R, c.R), dar = p.Slice((4 * m) + (2 * c.R), c.R), dbr = p.Slice((4 * m) + (3 * c.R), c.R);
                for (var i = 0; i < m; i++)
                {
                    var s = slots[i];
                    new ReadOnlySpan<float>(c.XPtr(s), c.In).CopyTo(new Span<float>(xs + (i * c.In), c.In));
                    new ReadOnlySpan<float>(dy + ((long)s * c.Out), c.Out).CopyTo(new Span<float>(dys + (i * c.Out), c.Out));
                    (xr[i], dyr[i], zr[i], dzr[i]) = ((nint)(xs + (i * c.In)), (nint)(dys + (i * c.Out)), (nint)(z + (i * c.R)), (nint)(dz + (i * c.R)));
                }
                CpuBlas.Gemm(xr, zr, c.In, l.AT(e), c.R, c.R, c.Scale);                            // Z = s X_e A_eᵀ
                CpuBlas.Gemm(dyr, dzr, c.Out, (float*)c.B + ((long)e * c.R), er, c.R, c.Scale);    // dZ = s dY_e B_e
                for (var i = 0; i < m; i++) xr[i] = (nint)(dxRows + ((long)slots[i] * c.In));
                CpuBlas.Gemm(dzr, xr, c.R, (float*)c.A + ((long)e * rIn), c.In, c.In);            // dx = dZ A_e
                CpuBlas.Transpose(new ReadOnlySpan<float>(z, m * c.R), m, c.R, new Span<float>(zt, m * c.R));
                CpuBlas.Transpose(new ReadOnlySpan<float>(dz, m * c.R), m, c.R, new Span<float>(dzt, m * c.R));
                for (var r = 0; r < c.R; r++)
                    (ztr[r], dztr[r], dar[r], dbr[r]) = ((nint)(zt + (r * m)), (nint)(dzt + (r * m)), (nint)(da + ((long)e * rIn) + (r * c.In)), (nint)(dbt + ((long)e * rOut) + (r * c.Out)));
                CpuBlas.Gemm(dztr, dar, m, xs, c.In, c.In);                                     // dA_e = dZᵀ X_e
                CpuBlas.Gemm(ztr, dbr, m, dys, c.Out, c.Out);                                   // dB_eᵀ = Zᵀ dY_e
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(buffer);
            ArrayPool<nint>.Shared.Return(ptrs);
        }
    }

    /// <summary>dX[n] = Σ_j per-slot dx[n, j] when the slots share X.</summary>
    private static void SumSlots(nint ctx, Call c, float* slotDx, float* dx) =>
        CpuParallel.Rows(ctx, c.N, (long)c.K * c.In, 0, (n, _) =>
        {
            var d = new Span<float>(dx + (n * c.In), c.In);
            new ReadOnlySpan<float>(slotDx + (n * c.K * c.In), c.In).CopyTo(d);
            for (var j = 1; j < c.K; j++) TensorPrimitives.Add(d, new ReadOnlySpan<float>(slotDx + (((n * c.K) + j) * c.In), c.In), d);
        });

    /// <summary>Slot indices sorted by expert (a counting sort); expert e's are order[start[e]..start[e+1]].</summary>
    private static int[] ByExpert(Call c, out int[] start)
    {
        var experts = new ReadOnlySpan<long>((long*)c.Experts, (int)c.Slots);
        start = new int[c.E + 1];
        foreach (var e in experts) start[e + 1]++;
        for (var e = 0; e < c.E; e++) start[e + 1] += start[e];
        var next = start[..^1];
        var order = new int[experts.Length];
        for (var s = 0; s < experts.Length; s++) order[next[experts[s]]++] = s;
        return order;
    }
}
