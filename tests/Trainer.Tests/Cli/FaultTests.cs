using MixLoRA.Cli;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Tests.Fixtures;
using MixLoRA.Trainer.Tests.Training;

namespace MixLoRA.Trainer.Tests.Cli;

/// <summary>
/// Issue 17's faults through the CLI: one `error:` line, exit 1, no stack trace, and nothing written to --out.
/// </summary>
[TestClass]
[DoNotParallelize]
public sealed class FaultTests
{
    private static string Artifacts => TrainFixture.Artifacts(micro: 2);

    private static (int Code, string Err) Cli(params string[] args) => CliCapture.Run(args);

    /// <summary>Trains on <paramref name="data"/> into a fresh --out; asserts the one-line error and that --out stays absent.</summary>
    private static string Refused(string data, params string[] parts)
    {
        var run = Path.Combine(TestFiles.TempDir(), "run");
        var (code, err) = Cli("train", "--artifacts", Artifacts, "--data", data, "--out", run, "--quiet", "--batch-size", "2", "--steps", "2");
        Assert.AreEqual(1, code, err);
        Assert.StartsWith("error: ", err, err);
        Assert.AreEqual(1, err.Trim().Split('\n').Length, $"one line:\n{err}");
        foreach (var p in parts) Assert.Contains(p, err);
        Assert.IsFalse(Directory.Exists(run), $"nothing written: {run} exists");
        return err;
    }

    [TestMethod]
    public void InvalidUtf8NamesTheFileAndLine()
    {
        var file = Path.Combine(TestFiles.TempDir(), "latin1.jsonl");
        var bytes = new List<byte>();
        bytes.AddRange("{\"input_ids\": [1, 5, 6]}\n{\"instruction\": \"caf"u8.ToArray());
        bytes.Add(0xE9);                                                                       // é in Latin-1
        bytes.AddRange("\", \"output\": \"x\"}\n"u8.ToArray());
        File.WriteAllBytes(file, [.. bytes]);
        Refused(file, file, "line 2", "0xE9", "UTF-8");
    }

    [TestMethod]
    public void TokenIdsOutsideTheVocabularyAreRefusedBeforeAnyRun()
    {
        var file = TestFiles.Write(TestFiles.TempDir(), "ids.jsonl", "{\"input_ids\": [1, 5, 6]}\n{\"input_ids\": [1, 70000, 6]}\n");
        Refused(file, "line 2", "70000", "vocabulary");
    }

    [TestMethod]
    public void AnUnknownTaskPrefixSaysSo()
    {
        var file = TestFiles.Write(TestFiles.TempDir(), "x.jsonl", "{\"input_ids\": [1, 5, 6]}\n");
        Refused($"mmlu:{file}", "unknown task 'mmlu'", "arc-e");
    }

    [TestMethod]
    public void AFolderGivenAsDataSaysSo()
    {
        var dir = TestFiles.TempDir();
        Refused(dir, dir, "is a folder");
    }

    [TestMethod]
    public void AnAdapterConfigInLatin1NamesTheFile()
    {
        var dir = TestFiles.TempDir();
        var config = Path.Combine(dir, "adapter_config.json");
        File.WriteAllBytes(config, [.. "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"], \"base_model_name_or_path\": \"mod"u8.ToArray(), 0xE8, .. "le\"}"u8.ToArray()]);
        var (code, err) = Cli("build-graph", "--model", Path.Combine(TestFiles.Parity("llama-basic")!, "model"), "--adapter", config, "--out", Path.Combine(dir, "art"));
        Assert.AreEqual(1, code, err);
        StringAssert.Contains(err, config);
        StringAssert.Contains(err, "UTF-8");
        Assert.DoesNotContain("   at ", err);
    }

    [TestMethod]
    public void AnExplodingLearningRateIsRefused()
    {
        var data = Path.Combine(TestFiles.Parity("llama-basic")!, "data.jsonl");
        var run = Path.Combine(TestFiles.TempDir(), "run");
        var (code, err) = Cli("train", "--artifacts", Artifacts, "--data", data, "--out", run, "--quiet", "--batch-size", "2", "--steps", "2", "--lr", "1e12");
        Assert.AreEqual(1, code, err);
        StringAssert.Contains(err, "--lr 1000000000000");
        Assert.IsFalse(Directory.Exists(run));
    }

    [TestMethod]
    public void AFailedBuildGraphLeavesTheOldArtifactsAsTheyWere()
    {
        var p = TestFiles.Parity("llama-basic")!;
        var work = TestFiles.TempDir();
        var artifacts = Path.Combine(work, "artifacts");
        Assert.AreEqual(0, Commands.Run(["build-graph", "--model", Path.Combine(p, "model"), "--adapter", Path.Combine(p, "adapter_init"), "--out", artifacts, "--seq-len", "64"]));
        var before = Directory.GetFiles(artifacts, "*", SearchOption.AllDirectories).ToDictionary(f => f, File.ReadAllBytes);
        var bad = TestFiles.Write(work, "bad_adapter.json", "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"lora_dropout\": 0, \"target_modules\": [\"qkv_proj\"]}");
        var (code, err) = Cli("build-graph", "--model", Path.Combine(p, "model"), "--adapter", bad, "--out", artifacts, "--seq-len", "32");
        Assert.AreEqual(1, code, err);
        StringAssert.Contains(err, "qkv_proj");
        CollectionAssert.AreEquivalent(before.Keys.ToArray(), Directory.GetFiles(artifacts, "*", SearchOption.AllDirectories));
        foreach (var (f, bytes) in before) CollectionAssert.AreEqual(bytes, File.ReadAllBytes(f), f);
        CollectionAssert.AreEquivalent(new[] { artifacts, bad }, Directory.GetFileSystemEntries(work), "no temporary or lock left beside it");
    }

    [TestMethod]
    public void AFailedBuildGraphIntoANewFolderLeavesNothing()
    {
        var p = TestFiles.Parity("llama-basic")!;
        var work = TestFiles.TempDir();
        var (code, err) = Cli("build-graph", "--model", Path.Combine(p, "model"), "--adapter", Path.Combine(p, "adapter_init"), "--out", Path.Combine(work, "art"), "--seq-len", "1");
        Assert.AreEqual(1, code, err);
        Assert.IsEmpty(Directory.GetFileSystemEntries(work), string.Join(", ", Directory.GetFileSystemEntries(work)));
    }

    [TestMethod]
    public void SilentOdditiesPrintOneWarningLine()
    {
        var p = TestFiles.Parity("llama-basic")!;
        var masked = TestFiles.Write(TestFiles.TempDir(), "masked.jsonl",
            "{\"input_ids\": [1, 5, 6, 7], \"labels\": [-100, -100, -100, -100]}\n{\"input_ids\": [1, 8, 9, 10]}\n");
        var (code, err) = Cli("train", "--artifacts", Artifacts, "--data", masked, "--out", Path.Combine(TestFiles.TempDir(), "run"), "--quiet",
            "--batch-size", "2", "--steps", "1");
        Assert.AreEqual(0, code, err);
        StringAssert.Contains(err, "warning: 1 of 2 records have no label tokens");
        StringAssert.Contains(err, "line 1");

        (code, err) = Cli("train", "--artifacts", Artifacts, "--data", Path.Combine(p, "data.jsonl"), "--out", Path.Combine(TestFiles.TempDir(), "run"), "--quiet",
            "--batch-size", "2", "--steps", "12", "--lr", "1e-20", "--no-shuffle");
        Assert.AreEqual(0, code, err);
        Assert.DoesNotContain("no label tokens", err);
        // AdamW moves each weight by about lr a step: 1e-20 leaves every float32 weight as it was
        StringAssert.Contains(err, "warning: the adapter has not changed in 10 steps");
        (code, err) = Cli("train", "--artifacts", Artifacts, "--data", Path.Combine(p, "data.jsonl"), "--out", Path.Combine(TestFiles.TempDir(), "run"), "--quiet",
            "--batch-size", "2", "--steps", "12", "--lr", "1e-3");
        Assert.AreEqual(0, code, err);
        Assert.AreEqual("", err, "a normal run warns about nothing");
    }

    [TestMethod]
    public void UnknownAdapterConfigKeysAreNamed()
    {
        var p = TestFiles.Parity("llama-basic")!;
        var dir = TestFiles.TempDir();
        var config = TestFiles.Write(dir, "adapter_config.json",
            "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"lora_dropout\": 0, \"target_modules\": [\"q_proj\"], \"use_rs_lora\": true, \"bias\": \"none\"}");
        var (code, err) = Cli("build-graph", "--model", Path.Combine(p, "model"), "--adapter", config, "--out", Path.Combine(dir, "art"), "--seq-len", "16");
        Assert.AreEqual(0, code, err);
        StringAssert.Contains(err, "warning:");
        StringAssert.Contains(err, "use_rs_lora");
        Assert.DoesNotContain("bias", err, "PEFT's own keys are known");
    }
}
