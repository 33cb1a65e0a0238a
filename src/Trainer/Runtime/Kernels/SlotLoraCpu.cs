using System.Buffers;
using System.Numerics.Tensors;

namespace MixLoRA.Trainer.Runtime.Kernels;

/// <summary>
/// The <see cref="GraphBuilder.Ops.SlotLoraOps"/> kernels in float32 on the CPU: SlotLora (X, A, B, Experts → Y) and
/// SlotLoraGrad (X, A, B, Experts, dY → dX, dA, dB). Every product is a <see cref="CpuBlas.Combine"/> over one expert's
/// blocks, laid out once per call so that each is contiguous: A_eᵀ (in, R), B_eᵀ (R, out), B_e (out, R).
/// The forward runs in parallel over slots; the backward over experts, so each thread owns its expert's dA and dB
/// rows; per-slot dx rows are summed over a token's slots afterwards when X is shared.
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

        public ReadOnlySpan<float> XRow(long slot) => new((float*)X + ((PerSlot ? slot : slot / K) * In), In);

        /// <summary>Expert e's R rows of A (R, in).</summary>
        public ReadOnlySpan<float> ABlock(int e) => new((float*)A + ((long)e * R * In), R * In);

        public int Expert(long slot) => (int)((long*)Experts)[slot];

        public static Call Of(nint ctx, NodeAttrs a)
        {
            var (x, ad, bd, ed) = (KernelIO.Dims(ctx, 0), KernelIO.Dims(ctx, 1), KernelIO.Dims(ctx, 2), KernelIO.Dims(ctx, 3));
            var r = (int)a.Rank;
            if (ed.Length != 2 || ad.Length != 2 || bd.Length != 2 || x.Length is not (2 or 3) || r < 1 || ad[0] % r != 0 || bd[1] != ad[0] || x[^1] != ad[1]
                || x[0] != ed[0] || (x.Length == 3 && x[1] != ed[1]))
                throw new InvalidOperationException($"SlotLora takes X (N, in) or (N, K, in), A (E·R, in), B (out, E·R), experts (N, K) with R = {r}; got X ({string.Join(", ", x)}), A ({string.Join(", ", ad)}), B ({string.Join(", ", bd)}), experts ({string.Join(", ", ed)})");
            var call = new Call(ed[0], (int)ed[1], (int)ad[1], (int)bd[0], r, (int)(ad[0] / r), x.Length == 3, a.Scale,
                KernelIO.In(ctx, 0), KernelIO.In(ctx, 1), KernelIO.In(ctx, 2), KernelIO.In(ctx, 3));
            foreach (var e in new ReadOnlySpan<long>((long*)call.Experts, (int)call.Slots))
            {
                if (e < 0 || e >= call.E) throw new InvalidOperationException($"SlotLora expert index {e} is outside [0, {call.E})");
            }
            return call;
        }
    }

    /// <summary>Per-expert contiguous copies: Aᵀ blocks (E, in, R), Bᵀ blocks (E, R, out) and B blocks (E, out, R).</summary>
    private sealed class Layouts : IDisposable
    {
        private readonly Call _c;
        private readonly float[] _at, _bt, _bx;

        public Layouts(Call c, bool withB)
        {
            _c = c;
            (_at, _bt, _bx) = (Rent(c.E * c.In * c.R), Rent(c.E * c.R * c.Out), withB ? Rent(c.E * c.Out * c.R) : []);
            CpuBlas.Transpose(new ReadOnlySpan<float>((float*)c.B, c.Out * c.E * c.R), c.Out, c.E * c.R, _bt);   // Bᵀ (E·R, out): expert e's R rows are B_eᵀ
            for (var e = 0; e < c.E; e++)
            {
                CpuBlas.Transpose(new ReadOnlySpan<float>((float*)c.A + ((long)e * c.R * c.In), c.R * c.In), c.R, c.In, AT(e));   // (R, in) → (in, R)
                if (withB) CpuBlas.Transpose(BT(e), c.R, c.Out, _bx.AsSpan(e * c.Out * c.R, c.Out * c.R));                    // (R, out) → (out, R)
            }
        }

        public Span<float> AT(int e) => _at.AsSpan(e * _c.In * _c.R, _c.In * _c.R);

        public ReadOnlySpan<float> BT(int e) => _bt.AsSpan(e * _c.R * _c.Out, _c.R * _c.Out);

        public ReadOnlySpan<float> B(int e) => _bx.AsSpan(e * _c.Out * _c.R, _c.Out * _c.R);

        public void Dispose()
        {
            ArrayPool<float>.Shared.Return(_at);
            ArrayPool<float>.Shared.Return(_bt);
            if (_bx.Length > 0) ArrayPool<float>.Shared.Return(_bx);
        }

        private static float[] Rent(int n) => ArrayPool<float>.Shared.Rent(Math.Max(1, n));
    }

    private static void Forward(nint ctx, NodeAttrs attrs)
    {
        var c = Call.Of(ctx, attrs);
        var y = (float*)KernelIO.Out(ctx, 0, c.N, c.K, c.Out);
        using var l = new Layouts(c, withB: false);
        CpuParallel.Rows(ctx, c.Slots, (long)c.R * (c.In + c.Out), c.R, (s, z) =>
        {
            var e = c.Expert(s);
            CpuBlas.Combine(c.XRow(s), l.AT(e), c.R, z);                                  // z = A_e x
            TensorPrimitives.Multiply(z, c.Scale, z);                                       //     · s
            CpuBlas.Combine(z, l.BT(e), c.Out, new Span<float>(y + (s * c.Out), c.Out));   // y = B_e z
        });
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
            using var l = new Layouts(c, withB: true);
            var order = ByExpert(c, out var start);
            fixed (float* sdx = slotDx)
            {
                var rows = c.PerSlot ? dx : sdx;
                CpuParallel.Rows(ctx, c.E, c.Slots * c.R * (2L * (c.In + c.Out)) / c.E, 0, (e, _) =>
                    Expert(c, l, (int)e, order.AsSpan(start[e], start[e + 1] - start[e]), dy, rows, da, dbt));
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
    /// Expert e's M slots: each slot's dx row, then dA_e = dZᵀ X_e and dB_eᵀ = Zᵀ dY_e over the slots gathered
    /// into contiguous (M, in) and (M, out) blocks.
    /// </summary>
    private static void Expert(Call c, Layouts l, int e, ReadOnlySpan<int> slots, float* dy, float* dxRows, float* da, float[] dbt)
    {
        var m = slots.Length;
        var (rIn, rOut) = (c.R * c.In, c.R * c.Out);
        var daE = new Span<float>(da + ((long)e * rIn), rIn);
        var dbtE = dbt.AsSpan(e * rOut, rOut);
        var buffer = ArrayPool<float>.Shared.Rent((m * (c.In + c.Out + (2 * c.R))) + (2 * c.R));
        try
        {
            var all = buffer.AsSpan();
            Span<float> xs = all[..(m * c.In)], dys = all.Slice(m * c.In, m * c.Out);
            Span<float> zt = all.Slice(m * (c.In + c.Out), m * c.R), dzt = all.Slice((m * (c.In + c.Out)) + (m * c.R), m * c.R);
            Span<float> z = all.Slice(m * (c.In + c.Out + (2 * c.R)), c.R), dz = all.Slice((m * (c.In + c.Out + (2 * c.R))) + c.R, c.R);
            for (var i = 0; i < m; i++)
            {
                var s = slots[i];
                Span<float> x = xs.Slice(i * c.In, c.In), g = dys.Slice(i * c.Out, c.Out);
                c.XRow(s).CopyTo(x);
                new ReadOnlySpan<float>(dy + ((long)s * c.Out), c.Out).CopyTo(g);
                CpuBlas.Combine(x, l.AT(e), c.R, z);                                      // z = s · A_e x
                CpuBlas.Combine(g, l.B(e), c.R, dz);                                      // dz = s · B_eᵀ dy
                TensorPrimitives.Multiply(z, c.Scale, z);
                TensorPrimitives.Multiply(dz, c.Scale, dz);
                CpuBlas.Combine(dz, c.ABlock(e), c.In, new Span<float>(dxRows + ((long)s * c.In), c.In));   // dx = A_eᵀ dz
                for (var r = 0; r < c.R; r++) (zt[(r * m) + i], dzt[(r * m) + i]) = (z[r], dz[r]);
            }
            for (var r = 0; r < c.R; r++)
            {
                CpuBlas.Combine(dzt.Slice(r * m, m), xs, c.In, daE.Slice(r * c.In, c.In));          // dA_e[r] = Σ_i dz_ir x_i
                CpuBlas.Combine(zt.Slice(r * m, m), dys, c.Out, dbtE.Slice(r * c.Out, c.Out));      // dB_eᵀ[r] = Σ_i z_ir dy_i
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(buffer);
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
