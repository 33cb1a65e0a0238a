using System.Text.Json;
using MixLoRA.Cli.Bench;
using MixLoRA.GraphBuilder;
using MixLoRA.Trainer.Tests.Data;

namespace MixLoRA.Trainer.Tests.Bench;

/// <summary>
/// Issue 19 item 4: `mixlora-bench --lengths` — the built-in histograms' fixed sequence (what tools/ref_bench.py
/// recomputes), lengths from a JSONL file, and the padded/packed fields of the JSON line. No timing assertions.
/// </summary>
[TestClass]
public sealed class LengthBenchTests
{
    [TestMethod]
    public void BuiltInLengthsFollowTheHistogram()
    {
        var arc = LengthDistribution.Parse("arc");
        var lengths = Enumerable.Range(0, 2000).Select(i => arc.Length(i, 4096)).ToArray();
        Assert.IsTrue(lengths.All(n => n is >= 60 and < 120), "inside the bins");
        var share = lengths.Count(n => n is >= 80 and < 100) / (double)lengths.Length;
        Assert.AreEqual(0.40, share, 0.01, "the middle bin's weight (low-discrepancy sequence)");
        // record 0: u = frac(φ) = 0.618 → bin [80, 100) (cumulative 0.30 .. 0.70) at (0.618 − 0.30) / 0.40 → 80 + 15.9
        Assert.AreEqual(95, arc.Length(0, 4096));
        Assert.AreEqual(64, arc.Length(0, 64), "cut at the row length");
    }

    [TestMethod]
    public void FileLengthsAndTheirErrors()
    {
        var dir = TestFiles.TempDir();
        var file = TestFiles.Write(dir, "r.jsonl", "{\"input_ids\": [1, 2, 3]}\n{\"length\": 7}\n");
        var d = LengthDistribution.Parse(file);
        CollectionAssert.AreEqual(new[] { 3, 7, 3 }, Enumerable.Range(0, 3).Select(i => d.Length(i, 100)).ToArray());
        var bad = TestFiles.Write(dir, "bad.jsonl", "{\"input_ids\": [1]}\n{\"text\": \"x\"}\n");
        var e = Assert.ThrowsExactly<UserError>(() => LengthDistribution.Parse(bad));
        StringAssert.Contains(e.Message, "line 2");
        Assert.ThrowsExactly<UserError>(() => LengthDistribution.Parse("wikitext"));
    }

    [TestMethod]
    public void PackedStepsCarryLessPaddingThanPaddedOnes()
    {
        var o = new BenchOptions
        {
            Config = "tiny", Adapter = new AdapterChoice("mixlora", 4, 8, 4, 2), SeqLen = 256, Batch = 2, Steps = 2, Warmup = 1,
            Lengths = LengthDistribution.Parse("arc"),
        };
        var j = JsonDocument.Parse(BenchRunner.Run(o).ToJson()).RootElement;
        Assert.AreEqual("arc", j.GetProperty("lengths").GetString());
        var (padded, packed) = (j.GetProperty("padded_padding_fraction").GetDouble(), j.GetProperty("packed_padding_fraction").GetDouble());
        // padded: 2 records of 60-119 tokens in rows of 256 → over half padding; packed: the rows fill to within one record
        Assert.IsTrue(padded is > 0.5 and < 0.77, $"padded {padded}");
        Assert.IsTrue(packed >= 0 && packed < 120.0 / 256, $"packed {packed}");
        Assert.IsGreaterThan(0, j.GetProperty("padded_real_tokens_per_s").GetDouble());
        Assert.IsGreaterThan(0, j.GetProperty("packed_real_tokens_per_s").GetDouble());
    }
}
