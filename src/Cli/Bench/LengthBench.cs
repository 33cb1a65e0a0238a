using System.Diagnostics;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Data;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Cli.Bench;

/// <summary>Real-length steps of one shape: padded (one record per row) and packed (records first-fit into the rows).</summary>
public sealed record LengthResult(double PaddedRealTokensPerS, double PaddedPaddingFraction, double PackedRealTokensPerS, double PackedPaddingFraction);

/// <summary>
/// `mixlora-bench --lengths`: records of random tokens with lengths from a <see cref="LengthDistribution"/> through
/// the bench's grad step (B rows of T tokens), two ways: padded, B records per step, each alone in its row (what an
/// unpacked `mixlora-train` step computes); packed, the next records first-fit into the B rows until one does not
/// fit (what `--packing` computes). Each way: warm-up steps, then timed steps; real tokens per second and the share
/// of the rows that is padding.
/// </summary>
public static class LengthBench
{
    public static LengthResult Run(StepRunner runner, LengthDistribution lengths, int batch, int seq, int vocab, int steps, int warmup, int seed)
    {
        var records = new RecordSource(lengths, seq, vocab, seed);
        var (padTps, padFraction) = Time(runner, () => records.Padded(batch, seq), steps, warmup, batch * (long)seq);
        var (packTps, packFraction) = Time(runner, () => records.Packed(batch, seq), steps, warmup, batch * (long)seq);
        return new LengthResult(padTps, padFraction, packTps, packFraction);
    }

    private static (double RealTokensPerS, double PaddingFraction) Time(StepRunner runner, Func<Batch> next, int steps, int warmup, long slots)
    {
        long step = 1_000;
        for (var i = 0; i < warmup; i++) runner.Step([next()], step++, 1e-4);
        long real = 0;
        double seconds = 0;
        for (var i = 0; i < steps; i++)
        {
            var b = next();
            var t0 = Stopwatch.GetTimestamp();
            runner.Step([b], step++, 1e-4);
            seconds += Stopwatch.GetElapsedTime(t0).TotalSeconds;
            real += b.RealTokens;
        }
        return (real / seconds, 1 - ((double)real / (slots * steps)));
    }

    /// <summary>An endless stream of records of random ids (labels on every token), lengths from the distribution.</summary>
    private sealed class RecordSource(LengthDistribution lengths, int seq, int vocab, int seed)
    {
        private readonly Random _rng = new(seed);
        private readonly List<Example> _made = [];
        private int _next;

        private int Take()
        {
            var n = lengths.Length(_made.Count, seq);
            var ids = Enumerable.Range(0, n).Select(_ => _rng.Next(vocab)).ToArray();
            _made.Add(new Example(ids, ids, 0, "bench", $"{lengths.Name}: record {_made.Count}"));
            return _next++;
        }

        public Batch Padded(int batch, int t) =>
            Packing.Fill(_made, Enumerable.Range(0, batch).Select(_ => new[] { Take() }).ToArray(), batch, t, 0);

        public Batch Packed(int batch, int t)
        {
            var rows = new List<List<int>>();
            var free = new List<int>();
            while (true)
            {
                var peek = lengths.Length(_made.Count, seq);
                var row = free.FindIndex(f => f >= peek);
                if (row < 0 && rows.Count == batch) break;                                 // the next record opens a row past B: next step
                if (row < 0)
                {
                    rows.Add([]);
                    free.Add(t);
                    row = rows.Count - 1;
                }
                rows[row].Add(Take());
                free[row] -= peek;
            }
            return Packing.Fill(_made, rows.Select(r => r.ToArray()).ToArray(), batch, t, 0);
        }
    }
}
