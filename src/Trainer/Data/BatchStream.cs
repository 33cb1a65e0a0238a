using MixLoRA.GraphBuilder;
using MixLoRA.Text.Data;

namespace MixLoRA.Trainer.Data;

/// <summary>
/// The endless stream of optimizer steps over a dataset of N examples. The records form one sequence:
/// epoch 0's order, then epoch 1's, … (see <see cref="EpochOrder"/>); step k takes the next B of them, so
/// with shuffling off step k uses records (k·B + j) mod N for j &lt; B, and a batch may run across an epoch
/// boundary. Each batch is split in order into B / MicroBatchSize micro-batches, or with packing packed
/// first-fit into rows of the sequence length, MicroBatchSize rows per micro-batch (<see cref="Packing"/>).
/// </summary>
public sealed class BatchStream
{
    readonly IReadOnlyList<Example> _examples;
    readonly BatchOptions _options;
    readonly int[]? _lengths;
    long _orderEpoch = -1;
    int[] _order = [];

    public BatchStream(IReadOnlyList<Example> examples, BatchOptions options, DataPosition position)
    {
        if (examples.Count == 0) throw Fail.User("the dataset holds no examples", "give --data files with at least one record");
        if (options.BatchSize < 1 || options.MicroBatchSize < 1 || (!options.Packing && options.BatchSize % options.MicroBatchSize != 0))
            throw Fail.User($"batch size {options.BatchSize} and micro-batch size {options.MicroBatchSize} do not fit",
                "use a positive batch size that is a multiple of the micro-batch size");
        if (position.Epoch < 0 || position.Index < 0 || position.Index >= examples.Count)
            throw Fail.User($"data position (epoch {position.Epoch}, index {position.Index}) is outside the dataset of {examples.Count} examples",
                "resume with the same --data files (and options) the checkpoint was trained with");
        if (options.Packing && options.SequenceLength is null) throw Fail.Bug("packing needs the graphs' sequence length");
        if (options.SequenceLength is int t)
        {
            foreach (var ex in examples)
                if (ex.Length > t)
                    throw Fail.User($"{ex.Source}: the example has {ex.Length} tokens, more than the sequence length {t}",
                        $"pass --cutoff-len {t} (or less) to truncate long examples");
        }
        _examples = examples;
        _options = options;
        _lengths = options.GroupByLength ? examples.Select(e => e.Length).ToArray() : null;
        Position = position;
    }

    /// <summary>Where the next step starts (store it in checkpoints).</summary>
    public DataPosition Position { get; private set; }

    public int Count => _examples.Count;

    /// <summary>The micro-batches of the next optimizer step, in order; advances <see cref="Position"/> by B records.</summary>
    public IReadOnlyList<Batch> NextStep()
    {
        var records = new int[_options.BatchSize];
        var pos = Position;
        for (int j = 0; j < records.Length; j++)
        {
            records[j] = OrderOf(pos.Epoch)[pos.Index];
            pos = pos.Advance(1, _examples.Count);
        }
        Position = pos;
        int m = _options.MicroBatchSize;
        if (_options.Packing) return Packing.Pack(_examples, records, m, _options.SequenceLength!.Value, _options.PadId);
        var batches = new List<Batch>(records.Length / m);
        for (int start = 0; start < records.Length; start += m)
            batches.Add(Pad(records[start..(start + m)]));
        return batches;
    }

    /// <summary>Record indices in the order epoch <paramref name="epoch"/> visits them.</summary>
    public int[] OrderOf(long epoch)
    {
        if (epoch != _orderEpoch)
        {
            _order = EpochOrder.Compute(_examples.Count, Position.Seed, epoch, _options.Shuffle, _lengths);
            _orderEpoch = epoch;
        }
        return _order;
    }

    /// <summary>
    /// Every record once, in dataset order, as micro-batches of the graphs' static shape (eval): packed, or one
    /// record per row; the last micro-batch is topped up with empty rows, which carry no loss.
    /// </summary>
    public IEnumerable<Batch> All()
    {
        var (n, m) = (_examples.Count, _options.MicroBatchSize);
        var t = _options.SequenceLength ?? throw Fail.Bug("eval batches need the graphs' sequence length");
        var all = Enumerable.Range(0, n).ToArray();
        if (_options.Packing) return Packing.Pack(_examples, all, m, t, _options.PadId);
        return all.Chunk(m).Select(c => Packing.Fill(_examples, c.Select(r => new[] { r }).ToArray(), m, t, _options.PadId));
    }

    /// <summary>Right-pads the given records into one batch.</summary>
    public Batch Pad(int[] records)
    {
        int t = _options.SequenceLength ?? records.Max(i => _examples[i].Length);
        int b = records.Length;
        var ids = new long[b * t];
        var mask = new long[b * t];
        var labels = new long[b * t];
        Array.Fill(ids, _options.PadId);
        Array.Fill(labels, Example.IgnoreIndex);
        for (int row = 0; row < b; row++)
        {
            var ex = _examples[records[row]];
            for (int k = 0; k < ex.Length; k++)
            {
                ids[row * t + k] = ex.InputIds[k];
                mask[row * t + k] = 1;
                labels[row * t + k] = ex.Labels[k];
            }
        }
        return new Batch(ids, mask, labels, b, t, records);
    }
}
