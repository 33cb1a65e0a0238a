using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Runtime.Kernels;

/// <summary>
/// The small dense products the CPU kernels are built from: <see cref="Gemm"/>, C = α·A·B with A's and C's rows given
/// by pointer (a gather and a scatter, so one expert's slots need no copies), and a transpose. Written here because
/// no package reachable from this build offers a managed small GEMM (ORT's MLAS is not callable from a custom op).
/// Register-blocked: four rows × sixteen columns of C live in eight Vector256 accumulators over the whole of k, so
/// each loaded B vector feeds four FMAs; a one-row loop and a scalar loop take the remainders.
/// </summary>
internal static unsafe class CpuBlas
{
    private const int L = 8;                                                              // Vector256<float> lanes

    /// <summary>
    /// C[i] ← α Σ_k A[i][k] · B[k] (or C[i] + that when <paramref name="accumulate"/>) for rows i &lt; a.Length:
    /// A rows of length <paramref name="k"/>, B (k, n) row-major with row stride <paramref name="ldb"/>, C rows of length n.
    /// </summary>
    public static void Gemm(ReadOnlySpan<nint> a, ReadOnlySpan<nint> c, int k, float* b, int ldb, int n, float alpha = 1f, bool accumulate = false)
    {
        if (a.Length != c.Length || ldb < n) throw Fail.Arg(nameof(a), $"{a.Length} A rows for {c.Length} C rows, ldb {ldb} for n {n}", "as many A rows as C rows and ldb ≥ n");
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 4 <= a.Length; i += 4) Rows4(a.Slice(i, 4), c.Slice(i, 4), k, b, ldb, n, alpha, accumulate);
        }
        for (; i < a.Length; i++) Row1((float*)a[i], (float*)c[i], k, b, ldb, n, alpha, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows4(ReadOnlySpan<nint> a, ReadOnlySpan<nint> c, int k, float* b, int ldb, int n, float alpha, bool accumulate)
    {
        float* a0 = (float*)a[0], a1 = (float*)a[1], a2 = (float*)a[2], a3 = (float*)a[3];
        float* c0 = (float*)c[0], c1 = (float*)c[1], c2 = (float*)c[2], c3 = (float*)c[3];
        var al = Vector256.Create(alpha);
        var col = 0;
        for (; col + (2 * L) <= n; col += 2 * L)
        {
            Vector256<float> s00 = default, s01 = default, s10 = default, s11 = default, s20 = default, s21 = default, s30 = default, s31 = default;
            var bp = b + col;
            for (var kk = 0; kk < k; kk++, bp += ldb)
            {
                var (b0, b1) = (Vector256.Load(bp), Vector256.Load(bp + L));
                var x = Vector256.Create(a0[kk]);
                (s00, s01) = (Vector256.FusedMultiplyAdd(b0, x, s00), Vector256.FusedMultiplyAdd(b1, x, s01));
                x = Vector256.Create(a1[kk]);
                (s10, s11) = (Vector256.FusedMultiplyAdd(b0, x, s10), Vector256.FusedMultiplyAdd(b1, x, s11));
                x = Vector256.Create(a2[kk]);
                (s20, s21) = (Vector256.FusedMultiplyAdd(b0, x, s20), Vector256.FusedMultiplyAdd(b1, x, s21));
                x = Vector256.Create(a3[kk]);
                (s30, s31) = (Vector256.FusedMultiplyAdd(b0, x, s30), Vector256.FusedMultiplyAdd(b1, x, s31));
            }
            Put(c0 + col, s00 * al, accumulate);
            Put(c0 + col + L, s01 * al, accumulate);
            Put(c1 + col, s10 * al, accumulate);
            Put(c1 + col + L, s11 * al, accumulate);
            Put(c2 + col, s20 * al, accumulate);
            Put(c2 + col + L, s21 * al, accumulate);
            Put(c3 + col, s30 * al, accumulate);
            Put(c3 + col + L, s31 * al, accumulate);
        }
        for (; col + L <= n; col += L)
        {
            Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
            var bp = b + col;
            for (var kk = 0; kk < k; kk++, bp += ldb)
            {
                var bv = Vector256.Load(bp);
                s0 = Vector256.FusedMultiplyAdd(bv, Vector256.Create(a0[kk]), s0);
                s1 = Vector256.FusedMultiplyAdd(bv, Vector256.Create(a1[kk]), s1);
                s2 = Vector256.FusedMultiplyAdd(bv, Vector256.Create(a2[kk]), s2);
                s3 = Vector256.FusedMultiplyAdd(bv, Vector256.Create(a3[kk]), s3);
            }
            Put(c0 + col, s0 * al, accumulate);
            Put(c1 + col, s1 * al, accumulate);
            Put(c2 + col, s2 * al, accumulate);
            Put(c3 + col, s3 * al, accumulate);
        }
        if (col < n)
        {
            Tail(a0, c0, k, b, ldb, col, n, alpha, accumulate);
            Tail(a1, c1, k, b, ldb, col, n, alpha, accumulate);
            Tail(a2, c2, k, b, ldb, col, n, alpha, accumulate);
            Tail(a3, c3, k, b, ldb, col, n, alpha, accumulate);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Row1(float* a, float* c, int k, float* b, int ldb, int n, float alpha, bool accumulate)
    {
        var col = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var al = Vector256.Create(alpha);
            for (; col + L <= n; col += L)
            {
                // four partial sums over k keep four FMA chains in flight
                Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
                var kk = 0;
                for (; kk + 4 <= k; kk += 4)
                {
                    var bp = b + ((long)kk * ldb) + col;
                    s0 = Vector256.FusedMultiplyAdd(Vector256.Load(bp), Vector256.Create(a[kk]), s0);
                    s1 = Vector256.FusedMultiplyAdd(Vector256.Load(bp + ldb), Vector256.Create(a[kk + 1]), s1);
                    s2 = Vector256.FusedMultiplyAdd(Vector256.Load(bp + (2 * ldb)), Vector256.Create(a[kk + 2]), s2);
                    s3 = Vector256.FusedMultiplyAdd(Vector256.Load(bp + (3 * ldb)), Vector256.Create(a[kk + 3]), s3);
                }
                for (; kk < k; kk++) s0 = Vector256.FusedMultiplyAdd(Vector256.Load(b + ((long)kk * ldb) + col), Vector256.Create(a[kk]), s0);
                Put(c + col, ((s0 + s1) + (s2 + s3)) * al, accumulate);
            }
        }
        Tail(a, c, k, b, ldb, col, n, alpha, accumulate);
    }

    /// <summary>Columns from..n−1 of one row, scalar.</summary>
    private static void Tail(float* a, float* c, int k, float* b, int ldb, int from, int n, float alpha, bool accumulate)
    {
        for (var col = from; col < n; col++)
        {
            var s = 0f;
            for (var kk = 0; kk < k; kk++) s = MathF.FusedMultiplyAdd(a[kk], b[((long)kk * ldb) + col], s);
            c[col] = accumulate ? c[col] + (alpha * s) : alpha * s;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put(float* c, Vector256<float> v, bool accumulate) => (accumulate ? Vector256.Load(c) + v : v).Store(c);

    /// <summary>dst (cols, rows) = srcᵀ for src (rows, cols), row-major, in 16 × 16 tiles.</summary>
    public static void Transpose(ReadOnlySpan<float> src, int rows, int cols, Span<float> dst)
    {
        var count = (long)rows * cols;
        if (src.Length < count || dst.Length < count) throw Fail.Arg(nameof(src), $"({rows}, {cols}) with {src.Length} source and {dst.Length} destination floats", $"{count} floats each way");
        const int T = 16;
        fixed (float* s = src, d = dst)
        {
            for (var i0 = 0; i0 < rows; i0 += T)
            {
                var i1 = Math.Min(rows, i0 + T);
                for (var j0 = 0; j0 < cols; j0 += T)
                {
                    var j1 = Math.Min(cols, j0 + T);
                    for (var i = i0; i < i1; i++)
                    {
                        for (var j = j0; j < j1; j++) d[((long)j * rows) + i] = s[((long)i * cols) + j];
                    }
                }
            }
        }
    }
}
