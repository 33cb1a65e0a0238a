using System.Text.Json;
using MixLoRA.Cli;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Trainer.Tests.Data;

[TestClass]
[DoNotParallelize]
public sealed class DataPrepareCommandTests
{
    /// <summary>`prepare` with a fake tokenizer wired in, whatever --tokenizer names.</summary>
    private static int Run(string[] args) => DataPrepareCommand.Run(args, _ => new ByteTokenizer());

    [TestMethod]
    public void WritesWhatTheTrainerSees_PerExample()
    {
        string dir = TestFiles.TempDir();
        string output = Path.Combine(dir, "prepared.jsonl");
        string s = TestFiles.Samples;
        int rc = Run(["--tokenizer", "tok.json", "--data", "boolq:" + Path.Combine(s, "boolq.jsonl"),
            "--data", Path.Combine(s, "instruction.json"), "--template", "plain", "--cutoff-len", "40", "--out", output]);
        Assert.AreEqual(0, rc);
        var lines = File.ReadAllLines(output);
        Assert.AreEqual(6, lines.Length);
        CollectionAssert.AreEqual(new[] { output }, Directory.GetFiles(dir), "no temp file left behind");

        using var first = JsonDocument.Parse(lines[0]);
        var r = first.RootElement;
        Assert.AreEqual("boolq", r.GetProperty("task").GetString());
        string text = "Please answer the following question with true or false: is a tomato botanically a fruit?\nAnswer: true";
        var expectedIds = new[] { ByteTokenizer.Bos }.Concat(ByteTokenizer.Bytes(text)).Take(40).ToArray();
        CollectionAssert.AreEqual(expectedIds, r.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray());
        Assert.IsTrue(r.GetProperty("labels").EnumerateArray().All(e => e.GetInt32() == -100), "cut inside the prompt: all masked");
        Assert.AreEqual("<s>" + text[..39], r.GetProperty("prompt").GetString());
        Assert.AreEqual("", r.GetProperty("target").GetString());

        using var fourth = JsonDocument.Parse(lines[3]);
        Assert.AreEqual("instruction", fourth.RootElement.GetProperty("task").GetString());
        Assert.AreEqual("<s>Give a synonym for the word.\nhappy\n", fourth.RootElement.GetProperty("prompt").GetString());
        Assert.AreEqual("joyf", fourth.RootElement.GetProperty("target").GetString(), "36 prompt tokens, cut at 40");
    }

    [TestMethod]
    public void Packing_WritesEachStepsRowsWithRecordsAndOffsets()
    {
        string dir = TestFiles.TempDir();
        string plain = Path.Combine(dir, "examples.jsonl"), rows = Path.Combine(dir, "rows.jsonl");
        string[] data = ["--tokenizer", "tok.json", "--data", "boolq:" + Path.Combine(TestFiles.Samples, "boolq.jsonl"),
            "--data", Path.Combine(TestFiles.Samples, "instruction.json"), "--template", "plain"];
        Assert.AreEqual(0, Run([.. data, "--out", plain]));
        Assert.AreEqual(0, Run([.. data, "--out", rows, "--packing", "--seq-len", "256", "--batch-size", "4"]));
        var lengths = File.ReadAllLines(plain).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("input_ids").GetArrayLength()).ToArray();
        var lines = File.ReadAllLines(rows).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        var seen = new List<int>();
        foreach (var r in lines)
        {
            int[] Ints(string k) => r.GetProperty(k).EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var (records, offsets, lens) = (Ints("records"), Ints("offsets"), Ints("lengths"));
            CollectionAssert.AreEqual(records.Select(i => lengths[i]).ToArray(), lens, "each record's tokens");
            CollectionAssert.AreEqual(lens.Select((_, k) => lens.Take(k).Sum()).ToArray(), offsets, "records sit back to back");
            Assert.AreEqual(256, r.GetProperty("tokens").GetInt32() + r.GetProperty("padding").GetInt32());
            seen.AddRange(records);
        }
        // 6 records, 4 per step: step 0 takes 0-3, step 1 takes 4, 5 and wraps to 0, 1 (as training does)
        CollectionAssert.AreEquivalent(new[] { 0, 1, 2, 3, 4, 5, 0, 1 }, seen);
        var e = Assert.ThrowsExactly<UserError>(() => Run([.. data, "--out", rows, "--packing"]));
        StringAssert.Contains(e.Message, "--seq-len");
    }

    [TestMethod]
    public void TrainOnInputs_KeepsPromptLabels()
    {
        string output = Path.Combine(TestFiles.TempDir(), "p.jsonl");
        int rc = Run(["--tokenizer", "t", "--data", Path.Combine(TestFiles.Samples, "piqa.jsonl"), "--train-on-inputs", "--out", output]);
        Assert.AreEqual(0, rc);
        using var doc = JsonDocument.Parse(File.ReadAllLines(output)[0]);
        CollectionAssert.AreEqual(
            doc.RootElement.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
            doc.RootElement.GetProperty("labels").EnumerateArray().Select(e => e.GetInt32()).ToArray());
    }

    [TestMethod]
    public void BadDataFile_IsAUserErrorAndWritesNothing()
    {
        string dir = TestFiles.TempDir();
        string bad = TestFiles.Write(dir, "bad.jsonl", "{\"input_ids\": [1]}\nnot json\n");
        string output = Path.Combine(dir, "out.jsonl");
        var e = Assert.ThrowsExactly<UserError>(() => Run(["--tokenizer", "t", "--data", bad, "--out", output]));
        StringAssert.Contains(e.Message, "line 2");
        Assert.IsFalse(File.Exists(output));
    }

    [TestMethod]
    public void MissingRequiredOption_IsAUsageError()
    {
        Assert.AreNotEqual(0, Run(["--tokenizer", "t", "--out", "x.jsonl"]));
        Assert.AreNotEqual(0, Run(["--tokenizer", "t", "--data", "a.jsonl", "--template", "chatml", "--out", "x.jsonl"]));
    }
}
