using MixLoRA.Text.Data;

namespace MixLoRA.Trainer.Data;

/// <summary>
/// One micro-batch as graph inputs, row-major [B, T]: token ids (right-padded with the pad id), the
/// attention mask as record ids (1 on an unpacked row's tokens; 1, 2, … for the records packed into a row;
/// 0 on padding), labels (−100 on padding, masked tokens and the first token of each record) and position
/// ids (each record's tokens count from 0; padding keeps its column index, as unpacked rows do).
/// <see cref="Records"/> are the dataset indices of the records, row by row; <see cref="Rows"/> where each
/// record sits.
/// </summary>
public sealed record Batch(long[] InputIds, long[] AttentionMask, long[] Labels, int B, int T, int[] Records)
{
    /// <summary>(B, T) position ids; by default 0..T−1 in every row.</summary>
    public long[] PositionIds { get; init; } = ColumnIndices(B, T);

    /// <summary>The records of each row and their offsets (one record at offset 0 per row unless packed).</summary>
    public IReadOnlyList<PackedRow> Rows { get; init; } = Records.Select(r => new PackedRow([r], [0], [0])).ToArray();

    /// <summary>Tokens that carry a loss: labels[t + 1] ≠ −100 within a row (the in-graph shift).</summary>
    public long LabelTokens
    {
        get
        {
            long n = 0;
            for (var row = 0; row < B; row++)
                for (var t = 1; t < T; t++)
                    if (Labels[(row * T) + t] != Example.IgnoreIndex) n++;
            return n;
        }
    }

    /// <summary>Tokens that are not padding.</summary>
    public long RealTokens => AttentionMask.LongCount(m => m != 0);

    /// <summary>(B, T) position ids 0..T−1 in every row (unpacked rows).</summary>
    public static long[] ColumnIndices(int b, int t)
    {
        var p = new long[b * t];
        for (var i = 0; i < p.Length; i++) p[i] = i % t;
        return p;
    }
}

/// <summary>One row's records (dataset indices), the column each starts at and its length.</summary>
public sealed record PackedRow(int[] Records, int[] Offsets, int[] Lengths);

/// <summary>How examples become batches.</summary>
/// <param name="BatchSize">Records per optimizer step.</param>
/// <param name="MicroBatchSize">Records per forward/backward pass; divides BatchSize (gradient accumulation). With
/// <paramref name="Packing"/>: rows per pass.</param>
/// <param name="PadId">Token id of padding.</param>
/// <param name="SequenceLength">Fixed T (the graph's sequence length), or null to pad each micro-batch to its longest record.</param>
/// <param name="Shuffle">Visit each epoch in an order shuffled from (seed, epoch).</param>
/// <param name="GroupByLength">Visit each epoch longest first (after the shuffle, if any).</param>
/// <param name="Packing">Pack each step's records first-fit into rows of <paramref name="SequenceLength"/> tokens.</param>
public sealed record BatchOptions(int BatchSize, int MicroBatchSize, int PadId, int? SequenceLength = null,
    bool Shuffle = false, bool GroupByLength = false, bool Packing = false);
