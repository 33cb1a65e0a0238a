using System.Buffers.Binary;
using System.Text.Json;
using MixLoRA.GraphBuilder;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Data;

namespace MixLoRA.Trainer.Tests.Data;

[TestClass]
public sealed class BatchStreamTests
{
    /// <summary>N examples; example i has i % 4 + 1 tokens, all equal to 10 + i (so rows identify records).</summary>
    static List<Example> Examples(int n) => Enumerable.Range(0, n)
        .Select(i => new Example(Enumerable.Repeat(10 + i, i % 4 + 1).ToArray(), Enumerable.Repeat(10 + i, i % 4 + 1).ToArray(), 0, "t", $"f: line {i + 1}"))
        .ToList();

    static int[] RecordsOf(IReadOnlyList<Batch> step) => step.SelectMany(b => b.Records).ToArray();

    [TestMethod]
    public void NoShuffle_StepKUsesKBPlusJModN()
    {
        const int n = 7, b = 3;
        var stream = new BatchStream(Examples(n), new BatchOptions(b, 1, 0), DataPosition.Start(5));
        for (int k = 0; k < 10; k++)
        {
            var step = stream.NextStep();
            Assert.AreEqual(b, step.Count, "B / micro-batch size micro-batches");
            for (int j = 0; j < b; j++)
            {
                Assert.AreEqual((k * b + j) % n, step[j].Records.Single(), $"step {k}, j {j}");
                Assert.AreEqual(10 + (k * b + j) % n, step[j].InputIds[0], "row holds that record's tokens");
            }
        }
    }

    [TestMethod]
    public void MicroBatchesSplitEachBatchInOrder()
    {
        var stream = new BatchStream(Examples(10), new BatchOptions(4, 2, 0), DataPosition.Start(0));
        stream.NextStep();
        var step = stream.NextStep();
        Assert.AreEqual(2, step.Count);
        CollectionAssert.AreEqual(new[] { 4, 5 }, step[0].Records);
        CollectionAssert.AreEqual(new[] { 6, 7 }, step[1].Records);
        CollectionAssert.AreEqual(new[] { 8, 9, 0, 1 }, RecordsOf(stream.NextStep()), "a batch runs across the epoch boundary");
    }

    [TestMethod]
    public void Shuffle_EachEpochIsAPermutation_DeterministicFromSeedAndEpoch()
    {
        const int n = 50;
        var a = EpochOrder.Compute(n, 1234, 0, shuffle: true);
        CollectionAssert.AreEquivalent(Enumerable.Range(0, n).ToArray(), a);
        CollectionAssert.AreEqual(a, EpochOrder.Compute(n, 1234, 0, shuffle: true));
        CollectionAssert.AreNotEqual(a, EpochOrder.Compute(n, 1234, 1, shuffle: true));
        CollectionAssert.AreNotEqual(a, EpochOrder.Compute(n, 1235, 0, shuffle: true));
        CollectionAssert.AreNotEqual(Enumerable.Range(0, n).ToArray(), a);
        CollectionAssert.AreEqual(Enumerable.Range(0, n).ToArray(), EpochOrder.Compute(n, 1234, 0, shuffle: false));
    }

    [TestMethod]
    public void Shuffle_StreamFollowsTheEpochOrders()
    {
        const int n = 9, b = 4;
        var stream = new BatchStream(Examples(n), new BatchOptions(b, 2, 0, Shuffle: true), DataPosition.Start(77));
        var expected = Enumerable.Range(0, 3).SelectMany(e => EpochOrder.Compute(n, 77, e, shuffle: true)).ToArray();
        var seen = Enumerable.Range(0, 6).SelectMany(_ => RecordsOf(stream.NextStep())).ToArray();
        CollectionAssert.AreEqual(expected[..24], seen);
        Assert.AreEqual(new DataPosition(2, 6, 77), stream.Position);
    }

    [TestMethod]
    public void Resume_FromSerializedPosition_ContinuesExactly()
    {
        var ex = Examples(11);
        var options = new BatchOptions(4, 2, 0, Shuffle: true);
        var full = new BatchStream(ex, options, DataPosition.Start(9));
        var reference = Enumerable.Range(0, 8).Select(_ => RecordsOf(full.NextStep())).ToList();

        var first = new BatchStream(ex, options, DataPosition.Start(9));
        for (int k = 0; k < 3; k++) first.NextStep();
        string saved = first.Position.ToJson();
        var resumed = new BatchStream(ex, options, DataPosition.FromJson(saved));
        for (int k = 3; k < 8; k++) CollectionAssert.AreEqual(reference[k], RecordsOf(resumed.NextStep()), $"step {k}");

        using var doc = JsonDocument.Parse(saved);
        Assert.AreEqual(1, doc.RootElement.GetProperty("epoch").GetInt64(), "12 records into 11: epoch 1");
        Assert.AreEqual(1, doc.RootElement.GetProperty("index").GetInt32());
        Assert.AreEqual(9, doc.RootElement.GetProperty("seed").GetInt64());
    }

    [TestMethod]
    public void Position_Advance_MatchesStepArithmetic()
    {
        var p = DataPosition.Start(3).Advance(5L * 4, 7);
        Assert.AreEqual(new DataPosition(20 / 7, 20 % 7, 3), p);
    }

    [TestMethod]
    public void PositionOutsideTheData_IsAUserError()
    {
        var e = Assert.ThrowsExactly<UserError>(() => new BatchStream(Examples(3), new BatchOptions(2, 1, 0), new DataPosition(0, 5, 1)));
        StringAssert.Contains(e.Message, "index 5");
    }

    [TestMethod]
    public void GroupByLength_LongestFirst_StableOnTies()
    {
        var ex = Examples(8); // lengths 1,2,3,4,1,2,3,4
        var order = EpochOrder.Compute(8, 0, 0, shuffle: false, ex.Select(e => e.Length).ToArray());
        CollectionAssert.AreEqual(new[] { 3, 7, 2, 6, 1, 5, 0, 4 }, order);
    }

    [TestMethod]
    public void Padding_FixedT_RightPadsWithPadIdMaskAndIgnoreLabels()
    {
        var ex = new List<Example>
        {
            new([1, 5, 6], [-100, 5, 6], 1, "t", "a"),
            new([1, 7], [-100, 7], 1, "t", "b"),
        };
        var batch = new BatchStream(ex, new BatchOptions(2, 2, 99, SequenceLength: 4), DataPosition.Start(0)).NextStep().Single();
        Assert.AreEqual(2, batch.B);
        Assert.AreEqual(4, batch.T);
        CollectionAssert.AreEqual(new long[] { 1, 5, 6, 99, 1, 7, 99, 99 }, batch.InputIds);
        CollectionAssert.AreEqual(new long[] { 1, 1, 1, 0, 1, 1, 0, 0 }, batch.AttentionMask);
        CollectionAssert.AreEqual(new long[] { -100, 5, 6, -100, -100, 7, -100, -100 }, batch.Labels);
    }

    [TestMethod]
    public void Padding_ToLongestInEachMicroBatch()
    {
        var stream = new BatchStream(Examples(4), new BatchOptions(4, 2, 0), DataPosition.Start(0));
        var step = stream.NextStep();
        Assert.AreEqual(2, step[0].T, "records 0,1 have 1 and 2 tokens");
        Assert.AreEqual(4, step[1].T, "records 2,3 have 3 and 4 tokens");
    }

    [TestMethod]
    public void FixedTShorterThanAnExample_IsAUserError()
    {
        var e = Assert.ThrowsExactly<UserError>(() => new BatchStream(Examples(4), new BatchOptions(2, 1, 0, SequenceLength: 3), DataPosition.Start(0)));
        StringAssert.Contains(e.Message, "f: line 4");
        StringAssert.Contains(e.Message, "--cutoff-len");
    }

    [TestMethod]
    public void BatchNotAMultipleOfMicroBatch_IsAUserError()
    {
        Assert.ThrowsExactly<UserError>(() => new BatchStream(Examples(4), new BatchOptions(3, 2, 0), DataPosition.Start(0)));
    }

    /// <summary>
    /// The parity case: records of data.jsonl, no shuffle, pad id 0. The reference's all-record batch
    /// (logits_base input_ids/attention_mask) must equal our right padding of all records, and its step-0
    /// logits cover records 0..B−1 padded to their longest.
    /// </summary>
    [TestMethod]
    public void ParityCase_PaddingAndFirstBatchMatchTheReference()
    {
        string? dir = TestFiles.Parity("llama-basic");
        Assert.IsNotNull(dir, "shared/parity/llama-basic not found above the repository");
        var examples = DatasetLoader.Load(DatasetSpec.FromArgs([Path.Combine(dir, "data.jsonl")]), null);
        using var train = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "train.json")));
        int b = train.RootElement.GetProperty("batch_size").GetInt32();
        int pad = train.RootElement.GetProperty("pad_token_id").GetInt32();
        var stream = new BatchStream(examples, new BatchOptions(b, b, pad), DataPosition.Start(0));

        var baseTensors = ReadSafetensors(Path.Combine(dir, "expected", "logits_base.safetensors"));
        var all = stream.Pad(Enumerable.Range(0, examples.Count).ToArray());
        CollectionAssert.AreEqual(baseTensors["input_ids"].Values, all.InputIds);
        CollectionAssert.AreEqual(baseTensors["attention_mask"].Values, all.AttentionMask);
        CollectionAssert.AreEqual(new long[] { examples.Count, all.T }, baseTensors["input_ids"].Shape);

        var step0 = ReadSafetensors(Path.Combine(dir, "expected", "logits_step0.safetensors"))["logits"].Shape;
        var first = stream.NextStep().Single();
        Assert.AreEqual(step0[0], first.B);
        Assert.AreEqual(step0[1], first.T);
        CollectionAssert.AreEqual(Enumerable.Range(0, b).ToArray(), first.Records);
    }

    /// <summary>The I64 tensors of a safetensors file (header: u64 length + JSON), and every tensor's shape.</summary>
    static Dictionary<string, (long[] Shape, long[] Values)> ReadSafetensors(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        long n = BinaryPrimitives.ReadInt64LittleEndian(bytes);
        using var header = JsonDocument.Parse(bytes.AsMemory(8, (int)n));
        var result = new Dictionary<string, (long[], long[])>();
        foreach (var p in header.RootElement.EnumerateObject())
        {
            if (p.Name == "__metadata__") continue;
            var shape = p.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            var offsets = p.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            long[] values = [];
            if (p.Value.GetProperty("dtype").GetString() == "I64")
            {
                var span = bytes.AsSpan((int)(8 + n + offsets[0]), (int)(offsets[1] - offsets[0]));
                values = new long[span.Length / 8];
                for (int i = 0; i < values.Length; i++) values[i] = BinaryPrimitives.ReadInt64LittleEndian(span[(8 * i)..]);
            }
            result[p.Name] = (shape, values);
        }
        return result;
    }
}

/// <summary>Issue 19: how --packing lays a step's records into rows.</summary>
[TestClass]
public sealed class PackingLayoutTests
{
    static List<Example> Examples(params int[] lengths) => lengths
        .Select((n, i) => new Example(Enumerable.Range(0, n).Select(k => 100 + (10 * i) + k).ToArray(), Enumerable.Range(0, n).Select(k => k < 2 ? -100 : 100 + (10 * i) + k).ToArray(), 2, "t", $"f: line {i + 1}"))
        .ToList();

    [TestMethod]
    public void FirstFitPutsEachRecordInTheFirstRowWithRoom()
    {
        var rows = Packing.FirstFit([5, 7, 3, 6, 2, 9], 10);
        CollectionAssert.AreEqual(new[] { 0, 2, 4 }, rows[0].ToArray(), "5 + 3 + 2");
        CollectionAssert.AreEqual(new[] { 1 }, rows[1].ToArray(), "7, then nothing else fits (3 went to row 0)");
        CollectionAssert.AreEqual(new[] { 3 }, rows[2].ToArray());
        CollectionAssert.AreEqual(new[] { 5 }, rows[3].ToArray());
    }

    [TestMethod]
    public void APackedStepTakesTheSameRecordsAsAnUnpackedOne()
    {
        var ex = Examples(4, 3, 5, 2, 6, 1, 3);
        var plain = new BatchStream(ex, new BatchOptions(4, 2, 0, 8, Shuffle: true), DataPosition.Start(3));
        var packed = new BatchStream(ex, new BatchOptions(4, 2, 0, 8, Shuffle: true, Packing: true), DataPosition.Start(3));
        for (var k = 0; k < 5; k++)
        {
            var (a, b) = (plain.NextStep(), packed.NextStep());
            CollectionAssert.AreEquivalent(a.SelectMany(x => x.Records).ToArray(), b.SelectMany(x => x.Records).ToArray(), $"step {k}");
            Assert.AreEqual(a.Sum(x => x.LabelTokens), b.Sum(x => x.LabelTokens), $"step {k}: label tokens");
            Assert.AreEqual(a.Sum(x => x.RealTokens), b.Sum(x => x.RealTokens), $"step {k}: real tokens");
            Assert.AreEqual(plain.Position, packed.Position, "the data position counts records");
        }
    }

    [TestMethod]
    public void RowsHoldRecordIdsRestartingPositionsAndNoLabelAcrossRecords()
    {
        var ex = Examples(4, 3, 5);
        var b = Packing.Fill(ex, [[0, 1], [2]], 3, 8, 0);
        CollectionAssert.AreEqual(new long[] { 1, 1, 1, 1, 2, 2, 2, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, b.AttentionMask);
        CollectionAssert.AreEqual(new long[] { 0, 1, 2, 3, 0, 1, 2, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7 }, b.PositionIds, "padding keeps its column");
        CollectionAssert.AreEqual(new long[] { 100, 101, 102, 103, 110, 111, 112, 0 }, b.InputIds[..8]);
        CollectionAssert.AreEqual(new long[] { -100, -100, 102, 103, -100, -100, 112, -100 }, b.Labels[..8], "the 2nd record's first label is −100");
        CollectionAssert.AreEqual(new[] { 0, 1, 2 }, b.Records);
        CollectionAssert.AreEqual(new[] { 0, 4 }, b.Rows[0].Offsets);
        Assert.AreEqual(2 + 1 + 3, b.LabelTokens);
        Assert.AreEqual(12, b.RealTokens);
    }

    [TestMethod]
    public void AStepNeedsAsManyMicroBatchesAsItsRows()
    {
        var ex = Examples(6, 6, 6, 6, 6);
        var step = new BatchStream(ex, new BatchOptions(5, 2, 0, 8, Packing: true), DataPosition.Start(0)).NextStep();
        Assert.HasCount(3, step, "5 rows of one record, 2 rows per micro-batch");
        Assert.IsTrue(step[2].AttentionMask[8..].All(m => m == 0), "the last micro-batch is topped up with an empty row");
    }
}
