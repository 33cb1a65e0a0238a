using MixLoRA.Cli;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Tests.Fixtures;
using MixLoRA.Trainer.Tests.Training;

namespace MixLoRA.Trainer.Tests.Cli;

/// <summary>
/// Issue 5 item 5: each user mistake is one `error: ...` message on stderr naming what is wrong and how to
/// fix it, with a non-zero exit code and no stack trace (the CLI run in-process, stderr captured).
/// </summary>
[TestClass]
[DoNotParallelize]
public sealed class TrainErrorTests
{
    private static string Artifacts => TrainFixture.Artifacts(micro: 2);

    /// <summary>Runs the CLI; returns the exit code and what it wrote to stderr.</summary>
    private static (int Code, string Err) Cli(params string[] args) => CliCapture.Run(args);

    private static string AssertError(int expectedCode, (int Code, string Err) r, params string[] parts)
    {
        Assert.AreEqual(expectedCode, r.Code, r.Err);
        Assert.StartsWith("error: ", r.Err, r.Err);
        Assert.DoesNotContain("   at ", r.Err, "no stack trace");
        foreach (var p in parts) Assert.Contains(p, r.Err);
        return r.Err;
    }

    private static string[] Train(string data, params string[] more) =>
        ["train", "--artifacts", Artifacts, "--data", data, "--out", Path.Combine(TestFiles.TempDir(), "run"), "--quiet",
            .. more.Contains("--batch-size") ? [] : new[] { "--batch-size", "2" }, .. more.Contains("--steps") ? [] : new[] { "--steps", "2" }, .. more];

    [TestMethod]
    public void MissingDataFile()
    {
        var missing = Path.Combine(TestFiles.TempDir(), "nope.jsonl");
        AssertError(1, Cli(Train(missing)), missing, "does not exist");
    }

    [TestMethod]
    public void JsonlLineThatDoesNotParse()
    {
        var dir = TestFiles.TempDir();
        var file = TestFiles.Write(dir, "bad.jsonl", "{\"input_ids\": [1, 5, 6]}\n{\"input_ids\": [1, 7\n");
        AssertError(1, Cli(Train(file)), file, "line 2", "not valid JSON");
    }

    [TestMethod]
    public void RecordLongerThanTheSequenceLength()
    {
        var ids = string.Join(", ", Enumerable.Range(3, 80));
        var file = TestFiles.Write(TestFiles.TempDir(), "long.jsonl", $"{{\"input_ids\": [{ids}]}}\n");
        AssertError(1, Cli(Train(file)), file, "line 1", "80 tokens", "sequence length 64", "--cutoff-len");
    }

    [TestMethod]
    public void RecordLongerThanTheSequenceLengthWithPacking()
    {
        var ids = string.Join(", ", Enumerable.Range(3, 80));
        var file = TestFiles.Write(TestFiles.TempDir(), "long.jsonl", $"{{\"input_ids\": [5, 6]}}\n{{\"input_ids\": [{ids}]}}\n");
        AssertError(1, Cli(Train(file, "--packing")), file, "line 2", "80 tokens", "sequence length 64", "--cutoff-len");
    }

    [TestMethod]
    public void ArtifactsBuiltBeforePackingAreRefusedWithTheFix()
    {
        // a copy of the artifacts whose manifest says the format before packing (graphs without position_ids)
        var old = Path.Combine(TestFiles.TempDir(), "old-artifacts");
        Directory.CreateDirectory(old);
        foreach (var f in Directory.GetFiles(Artifacts)) File.Copy(f, Path.Combine(old, Path.GetFileName(f)));
        var manifest = Path.Combine(old, "manifest.json");
        File.WriteAllText(manifest, File.ReadAllText(manifest).Replace("mixlora-artifacts/2", "mixlora-artifacts/1", StringComparison.Ordinal));
        string[] args = ["train", "--artifacts", old, "--data", TrainFixture.Data, "--out", Path.Combine(TestFiles.TempDir(), "run"), "--quiet", "--packing"];
        AssertError(1, Cli(args), manifest, "mixlora-artifacts/1", "rebuild", "mixlora-build-graph");
    }

    [TestMethod]
    public void MissingModelFolder()
    {
        var missing = Path.Combine(TestFiles.TempDir(), "no-model");
        AssertError(1, Cli("build-graph", "--model", missing, "--adapter", Path.Combine(TrainFixture.ParityDir, "adapter_init"), "--out", TestFiles.TempDir()), missing, "does not exist");
    }

    [TestMethod]
    public void UnreadableModelConfigAndWeights()
    {
        var model = CopyModel();
        var config = Path.Combine(model, "config.json");
        var text = File.ReadAllText(config);
        File.WriteAllText(config, text[..(text.Length / 2)]);
        AssertError(1, Cli("build-graph", "--model", model, "--adapter", Path.Combine(TrainFixture.ParityDir, "adapter_init"), "--out", TestFiles.TempDir()), config);

        File.WriteAllText(config, text);
        var weights = Path.Combine(model, "model.safetensors");
        File.WriteAllBytes(weights, [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x7B]);
        AssertError(1, Cli("build-graph", "--model", model, "--adapter", Path.Combine(TrainFixture.ParityDir, "adapter_init"), "--out", TestFiles.TempDir()), weights);
    }

    [TestMethod]
    public void AdapterThatDoesNotFitTheModel()
    {
        var adapter = TestFiles.TempDir();
        File.Copy(Path.Combine(TrainFixture.ParityDir, "adapter_init", "adapter_config.json"), Path.Combine(adapter, "adapter_config.json"));
        var w = AdapterWeights.Load(Path.Combine(TrainFixture.ParityDir, "adapter_init"));
        var key = w.Keys.First(k => k.Contains("lora_A", StringComparison.Ordinal));
        var shape = w[key].Shape;
        long[] wrong = [shape[0] + 2, shape[1]];
        w.Set(key, wrong, new float[wrong[0] * wrong[1]]);
        w.Save(adapter);
        AssertError(1, Cli("build-graph", "--model", TrainFixture.Model, "--adapter", adapter, "--out", TestFiles.TempDir(), "--seq-len", "64"),
            key, $"[{wrong[0]}, {wrong[1]}]", $"[{shape[0]}, {shape[1]}]");
    }

    [TestMethod]
    public void ArtifactsBuiltForAnotherModel()
    {
        var model = CopyModel();
        var artifacts = Path.Combine(TestFiles.TempDir(), "artifacts");
        Assert.AreEqual(0, Cli("build-graph", "--model", model, "--adapter", Path.Combine(TrainFixture.ParityDir, "adapter_init"), "--out", artifacts, "--seq-len", "32").Code);
        var config = Path.Combine(model, "config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": 1e-06", StringComparison.Ordinal));
        var args = Train(TrainFixture.Data);
        args[2] = artifacts;
        AssertError(1, Cli(args), model, "fingerprint mismatch", "mixlora-build-graph");
    }

    [TestMethod]
    public void NonFiniteLossStopsAndNamesTheNewestFiniteCheckpoint()
    {
        // decoupled weight decay 1e6 at lr 1 multiplies every weight by (1 - 1e6) per step: float32 overflows within a few steps
        var output = Path.Combine(TestFiles.TempDir(), "run");
        string[] args = ["train", "--artifacts", Artifacts, "--data", TrainFixture.Data, "--out", output, "--batch-size", "2", "--steps", "12",
            "--lr", "1", "--weight-decay", "1e6", "--save-steps", "1", "--quiet"];
        var err = AssertError(1, Cli(args), "at step", "the newest checkpoint with finite weights is", "--lr");
        var step = int.Parse(System.Text.RegularExpressions.Regex.Match(err, @"became \S+ at step (\d+)").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.IsGreaterThan(0, step, err);
        var losses = TrainFixture.Losses(output);
        Assert.HasCount(step, losses, "metrics of the good steps only");
        Assert.IsTrue(losses.All(double.IsFinite));
        static bool Finite(string checkpoint) => AdapterWeights.Load(Path.Combine(checkpoint, "adapter")).Values.All(t => t.Data.All(float.IsFinite));
        var named = System.Text.RegularExpressions.Regex.Match(err, @"finite weights is (\S+?step-(\d+))").Groups;
        var keep = named[1].Value;
        Assert.IsTrue(Finite(keep), $"the named checkpoint {keep} is finite");
        var newer = Directory.GetDirectories(Path.Combine(output, "checkpoints"), "step-*")
            .Where(d => int.Parse(Path.GetFileName(d)["step-".Length..], System.Globalization.CultureInfo.InvariantCulture) > int.Parse(named[2].Value, System.Globalization.CultureInfo.InvariantCulture));
        Assert.IsTrue(newer.All(d => !Finite(d)), "every newer checkpoint holds non-finite weights");
        Assert.IsFalse(Directory.Exists(Path.Combine(output, "checkpoints", $"step-{step + 1}")), "nothing saved after the failed step");
        Assert.IsFalse(Directory.Exists(Path.Combine(output, "adapter")), "no final adapter from a failed run");
    }

    [TestMethod]
    public void BadFlagValues()
    {
        AssertError(1, Cli(Train(TrainFixture.Data, "--steps", "-5")), "--steps -5 must be positive");
        AssertError(1, Cli(Train(TrainFixture.Data, "--batch-size", "3")), "--batch-size 3 is not a multiple of the micro-batch size 2");
        AssertError(1, Cli(Train(TrainFixture.Data, "--lr", "-0.1")), "--lr -0.1 must be a positive number");
        AssertError(1, Cli(Train(TrainFixture.Data, "--lr", "3")), "--lr 3 would move every adapter weight");
        AssertError(1, Cli(Train(TrainFixture.Data, "--eval-steps", "2")), "--eval-steps 2 without --eval-data");
        AssertError(2, Cli(Train(TrainFixture.Data, "--steps", "many")), "--steps 'many' is not an integer");
        AssertError(2, Cli(Train(TrainFixture.Data, "--no-such-flag")), "--no-such-flag");
        AssertError(1, Cli("train", "--out", TestFiles.TempDir(), "--steps", "0"), "--steps 0 must be positive");
    }

    private static string CopyModel()
    {
        var dir = Path.Combine(TestFiles.TempDir(), "model");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(TrainFixture.Model)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }
}
