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
