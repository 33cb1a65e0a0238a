using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime.Kernels;

namespace MixLoRA.Trainer.Tests.Kernels;

/// <summary>
/// The pieces the CPU kernels are built from, against plain scalar references: the register-blocked GEMM on every
/// remainder path (rows not a multiple of 4, columns not a multiple of 8 or 16, k = 0, a B row stride wider than n,
/// accumulate), and the vectorised dropout mask against <see cref="DropoutHash.Keep"/> at row lengths and offsets
/// that hit the vector loops and the scalar tail.
/// </summary>
[TestClass]
public sealed unsafe class CpuKernelPartsTests
{
    [TestMethod]
    [DataRow(0, 5, 16)]
    [DataRow(1, 7, 3)]
    [DataRow(4, 16, 16)]
    [DataRow(5, 64, 160)]
    [DataRow(7, 3, 24)]
    [DataRow(9, 17, 41)]
    [DataRow(6, 0, 10)]
    public void GemmMatchesTheTripleLoop(int rows, int k, int n)
    {
        var rng = new Random((rows * 1000) + (k * 10) + n);
        var ldb = n + 3;
        float Next() => (float)(rng.NextDouble() - 0.5);
        var a = Enumerable.Range(0, rows).Select(_ => Enumerable.Range(0, k + 1).Select(_ => Next()).ToArray()).ToArray();
        var b = Enumerable.Range(0, Math.Max(1, k * ldb)).Select(_ => Next()).ToArray();
        foreach (var accumulate in new[] { false, true })
        {
            var c = Enumerable.Range(0, rows).Select(_ => Enumerable.Range(0, n + 1).Select(_ => Next()).ToArray()).ToArray();
            var want = c.Select(row => (float[])row.Clone()).ToArray();
            for (var i = 0; i < rows; i++)
            {
                for (var j = 0; j < n; j++)
                {
                    var s = 0.0;
                    for (var kk = 0; kk < k; kk++) s += (double)a[i][kk] * b[(kk * ldb) + j];
                    want[i][j] = (float)((accumulate ? want[i][j] : 0) + (1.5 * s));
                }
            }
            var handles = a.Concat(c).Select(x => System.Runtime.InteropServices.GCHandle.Alloc(x, System.Runtime.InteropServices.GCHandleType.Pinned)).ToArray();
            try
            {
                var ap = handles[..rows].Select(h => h.AddrOfPinnedObject()).ToArray();
                var cp = handles[rows..].Select(h => h.AddrOfPinnedObject()).ToArray();
                fixed (float* bp = b) CpuBlas.Gemm(ap, cp, k, bp, ldb, n, 1.5f, accumulate);
            }
            finally
            {
                foreach (var h in handles) h.Free();
            }
            for (var i = 0; i < rows; i++)
            {
                for (var j = 0; j < n; j++) Assert.AreEqual(want[i][j], c[i][j], 1e-5f, $"C[{i}][{j}] rows {rows} k {k} n {n} accumulate {accumulate}");
                Assert.AreEqual(want[i][n], c[i][n], $"C[{i}][{n}] is past n and must not be written");
            }
        }
    }

    [TestMethod]
    [DataRow(1, 1)]
    [DataRow(3, 40)]
    [DataRow(33, 17)]
    [DataRow(128, 160)]
    public void TransposeSwapsRowsAndColumns(int rows, int cols)
    {
        var src = Enumerable.Range(0, rows * cols).Select(i => (float)i).ToArray();
        var dst = new float[(rows * cols) + 1];
        dst[^1] = -7f;
        CpuBlas.Transpose(src, rows, cols, dst);
        for (var i = 0; i < rows; i++)
        {
            for (var j = 0; j < cols; j++) Assert.AreEqual(src[(i * cols) + j], dst[(j * rows) + i], $"({i}, {j}) of ({rows}, {cols})");
        }
        Assert.AreEqual(-7f, dst[^1], "nothing past rows·cols is written");
    }

    [TestMethod]
    [DataRow(0.05, 7L, 1)]
    [DataRow(0.3, 0L, 40)]
    [DataRow(0.5, 1001L, 160)]
    [DataRow(0.9, 33L, 23)]
    public void DropoutMaskIsKeep(double ratio, long first, int length)
    {
        var mask = DropoutMask.Of((nint)(&first), ratio, salt: 3);                      // the seed is read through the pointer: seed = first
        var mult = new float[length];
        var scale = 1f / (1f - (float)ratio);
        foreach (var bits in new[] { 512, 256, 0 })                                      // each vector width this CPU has, and scalar
        {
            mult.AsSpan().Fill(-1f);
            mask.Fill(first, mult, bits);
            for (var c = 0; c < length; c++)
                Assert.AreEqual(DropoutHash.Keep(first, 3, first + c, ratio) ? scale : 0f, mult[c], $"element {first + c} of ratio {ratio}, {bits}-bit vectors");
        }
        default(DropoutMask).Fill(first, mult);
        Assert.IsTrue(mult.All(v => v == 1f), "no dropout: all ones");
    }
}
