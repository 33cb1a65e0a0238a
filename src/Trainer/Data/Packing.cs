using MixLoRA.GraphBuilder;
using MixLoRA.Text.Data;

namespace MixLoRA.Trainer.Data;

/// <summary>
/// Sequence packing: records go first-fit, in the order given, into rows of T tokens (each record into the
/// first row with room for it, else a new row), and the rows fill micro-batches of R rows, the last one
/// topped up with empty rows. Inside a row the attention mask holds each record's number (1, 2, …), so
/// attention stays within a record (<c>Attention.Mask</c> with segments), positions restart at 0, and the
/// first label of every record is −100, so the label shift never predicts across records.
/// </summary>
public static class Packing
{
    /// <summary>First-fit rows over <paramref name="lengths"/> (indices into it, in order), each at most <paramref name="seqLen"/> tokens.</summary>
    public static List<List<int>> FirstFit(IReadOnlyList<int> lengths, int seqLen)
    {
        var rows = new List<List<int>>();
        var free = new List<int>();
        for (var i = 0; i < lengths.Count; i++)
        {
            Fail.If(lengths[i] > seqLen, $"record {i} has {lengths[i]} tokens, more than the row length {seqLen}", "truncate with --cutoff-len");
            var row = free.FindIndex(f => f >= lengths[i]);
            if (row < 0)
            {
                rows.Add([]);
                free.Add(seqLen);
                row = rows.Count - 1;
            }
            rows[row].Add(i);
            free[row] -= lengths[i];
        }
        return rows;
    }

    /// <summary>The micro-batches of <paramref name="records"/> (dataset indices) packed into rows of <paramref name="seqLen"/>.</summary>
    public static IReadOnlyList<Batch> Pack(IReadOnlyList<Example> examples, int[] records, int rowsPerBatch, int seqLen, int padId)
    {
        var rows = FirstFit(records.Select(r => examples[r].Length).ToArray(), seqLen);
        var batches = new List<Batch>();
        for (var start = 0; start < rows.Count; start += rowsPerBatch)
        {
            var chunk = rows.Skip(start).Take(rowsPerBatch).Select(row => row.Select(i => records[i]).ToArray()).ToArray();
            batches.Add(Fill(examples, chunk, rowsPerBatch, seqLen, padId));
        }
        return batches;
    }

    /// <summary>One micro-batch of <paramref name="b"/> rows holding the given records (fewer rows: empty ones follow).</summary>
    public static Batch Fill(IReadOnlyList<Example> examples, int[][] rows, int b, int t, int padId)
    {
        var ids = new long[b * t];
        var mask = new long[b * t];
        var labels = new long[b * t];
        var positions = new long[b * t];
        Array.Fill(ids, padId);
        Array.Fill(labels, Example.IgnoreIndex);
        for (var i = 0; i < positions.Length; i++) positions[i] = i % t;
        var layout = new List<PackedRow>();
        for (var row = 0; row < rows.Length; row++)
        {
            var (offsets, lengths) = (new int[rows[row].Length], new int[rows[row].Length]);
            var at = 0;
            for (var k = 0; k < rows[row].Length; k++)
            {
                var ex = examples[rows[row][k]];
                (offsets[k], lengths[k]) = (at, ex.Length);
                for (var j = 0; j < ex.Length; j++)
                {
                    var cell = (row * t) + at + j;
                    (ids[cell], mask[cell], positions[cell]) = (ex.InputIds[j], k + 1, j);
                    labels[cell] = j == 0 ? Example.IgnoreIndex : ex.Labels[j];      // never a target across records
                }
                at += ex.Length;
            }
            layout.Add(new PackedRow(rows[row], offsets, lengths));
        }
        return new Batch(ids, mask, labels, b, t, rows.SelectMany(r => r).ToArray()) { PositionIds = positions, Rows = layout };
    }
}
