namespace MixLoRA.Trainer.Data;

/// <summary>
/// One micro-batch as graph inputs, row-major [B, T]: token ids (right-padded with the pad id), the
/// attention mask (1 on tokens, 0 on padding) and labels (−100 on padding and masked tokens).
/// <see cref="Records"/> are the dataset indices of the rows.
/// </summary>
public sealed record Batch(long[] InputIds, long[] AttentionMask, long[] Labels, int B, int T, int[] Records);

/// <summary>How examples become batches.</summary>
/// <param name="BatchSize">Records per optimizer step.</param>
/// <param name="MicroBatchSize">Records per forward/backward pass; divides BatchSize (gradient accumulation).</param>
/// <param name="PadId">Token id of padding.</param>
/// <param name="SequenceLength">Fixed T (the graph's sequence length), or null to pad each micro-batch to its longest record.</param>
/// <param name="Shuffle">Visit each epoch in an order shuffled from (seed, epoch).</param>
/// <param name="GroupByLength">Visit each epoch longest first (after the shuffle, if any).</param>
public sealed record BatchOptions(int BatchSize, int MicroBatchSize, int PadId, int? SequenceLength = null,
    bool Shuffle = false, bool GroupByLength = false);
