using System.Buffers;

namespace MixLoRA.Runtime.Kernels;

/// <summary>The work of one row with a scratch buffer of the caller's length, private to the running thread.</summary>
internal delegate void RowBody(long row, Span<float> scratch);

/// <summary>How the CPU kernels spread rows over threads: serial below ~32k elements, else chunks of rows on ORT's intra-op pool.</summary>
internal static class CpuParallel
{
    private const long SerialBelow = 1 << 15;

    /// <summary>Runs <paramref name="body"/> for rows 0..<paramref name="rows"/>−1 (<paramref name="perRow"/> elements each).</summary>
    public static void Rows(nint ctx, long rows, long perRow, int scratch, RowBody body)
    {
        var chunks = rows * perRow < SerialBelow ? 1 : (int)Math.Min(rows, Environment.ProcessorCount * 4L);
        var size = (rows + chunks - 1) / chunks;
        if (chunks == 1) Chunk(0, rows, scratch, body);
        else OrtKernelApi.ParallelFor(ctx, chunks, c => Chunk(c * size, Math.Min(rows, (c + 1) * size), scratch, body));
    }

    private static void Chunk(long from, long to, int scratch, RowBody body)
    {
        var buffer = ArrayPool<float>.Shared.Rent(Math.Max(1, scratch));
        try
        {
            for (var r = from; r < to; r++) body(r, buffer.AsSpan(0, scratch));
        }
        finally
        {
            ArrayPool<float>.Shared.Return(buffer);
        }
    }
}
