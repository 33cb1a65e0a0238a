using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Tests.Model;

namespace MixLoRA.Trainer.Tests.Cli;

/// <summary>
/// Corrupt or mismatched inputs to `mixlora-score`: exit code 1, one message on stderr naming the file,
/// tensor or line and the bad value, no stack trace, and no --out file.
/// </summary>
[TestClass]
[DoNotParallelize]
public sealed class ScoreErrorTests
{
    private static readonly TinyModel Model = new();

    private static void AssertFails(TempDir tmp, string model, string data, string[] expected, params string[] extra)
    {
        var outFile = Path.Combine(tmp.Path, "out.safetensors");
        var (rc, stdout, stderr) = Cli.Run(["score", "--model", model, "--data", data, "--out", outFile, .. extra]);
        Assert.AreEqual(1, rc, $"stdout: {stdout}\nstderr: {stderr}");
        Assert.AreEqual(1, stderr.Trim().Split('\n').Length, $"one line on stderr: {stderr}");
        StringAssert.StartsWith(stderr, "error: ");
        Assert.IsFalse(stderr.Contains("   at ", StringComparison.Ordinal), stderr);
        foreach (var s in expected) StringAssert.Contains(stderr, s);
        Assert.IsFalse(File.Exists(outFile), "no output is written");
    }

    private static string Data(TempDir tmp, string content = "{\"input_ids\": [1, 5, 9, 4]}\n{\"input_ids\": [3, 7], \"labels\": [-100, 7]}\n") =>
        TestFiles.Write(tmp.Path, "data.jsonl", content);

    private static string TinyDir(TempDir tmp)
    {
        var dir = Path.Combine(tmp.Path, "model");
        Model.Write(dir);
        return dir;
    }

    [TestMethod]
    public void TheTinyModelScores()
    {
        using var tmp = new TempDir();
        var (rc, stdout, stderr) = Cli.Run(["score", "--model", TinyDir(tmp), "--data", Data(tmp)]);
        Assert.AreEqual(0, rc, stderr);
        StringAssert.Contains(stdout, "records 2, sequence length 4, labelled tokens 4: loss ");
    }

    [TestMethod]
    public void MissingModelFolder()
    {
        using var tmp = new TempDir();
        var missing = Path.Combine(tmp.Path, "nowhere");
        AssertFails(tmp, missing, Data(tmp), [missing]);
    }

    [TestMethod]
    public void TruncatedSafetensors()
    {
        using var tmp = new TempDir();
        var dir = TinyDir(tmp);
        var file = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(file);
        File.WriteAllBytes(file, bytes[..(bytes.Length / 2)]);
        AssertFails(tmp, dir, Data(tmp), [file]);
    }

    [TestMethod]
    public void MissingTensor()
    {
        using var tmp = new TempDir();
        var dir = TinyDir(tmp);
        var w = Model.Weights(7);
        w.Remove("model.layers.1.mlp.up_proj.weight");
        SafetensorsWriter.WriteFloats(Path.Combine(dir, "model.safetensors"), w.Select(p => (p.Key, p.Value.Shape, p.Value.Data)));
        AssertFails(tmp, dir, Data(tmp), ["'model.layers.1.mlp.up_proj.weight'", "missing"]);
    }

    [TestMethod]
    public void WrongShapeTensor()
    {
        using var tmp = new TempDir();
        var dir = TinyDir(tmp);
        var w = Model.Weights(7);
        w["model.layers.0.self_attn.k_proj.weight"] = ([8, 32], new float[8 * 32]);
        SafetensorsWriter.WriteFloats(Path.Combine(dir, "model.safetensors"), w.Select(p => (p.Key, p.Value.Shape, p.Value.Data)));
        AssertFails(tmp, dir, Data(tmp), ["'model.layers.0.self_attn.k_proj.weight'", "[8, 32]", "[16, 32]"]);
    }

    [TestMethod]
    public void UnknownModelType()
    {
        using var tmp = new TempDir();
        var dir = Path.Combine(tmp.Path, "model");
        (Model with { ModelType = "llama" }).Write(dir);
        var config = Path.Combine(dir, "config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"model_type\": \"llama\"", "\"model_type\": \"gpt2\"", StringComparison.Ordinal));
        AssertFails(tmp, dir, Data(tmp), [config, "model_type", "gpt2"]);
    }

    [TestMethod]
    public void BadJsonlLine()
    {
        using var tmp = new TempDir();
        var data = Data(tmp, "{\"input_ids\": [1, 2]}\n\n{\"input_ids\": [1, 2\n");
        AssertFails(tmp, TinyDir(tmp), data, [data, "line 3"]);
    }

    [TestMethod]
    public void RecordWithoutInputIds()
    {
        using var tmp = new TempDir();
        var data = Data(tmp, "{\"input_ids\": [1, 2]}\n{\"text\": \"hello\"}\n");
        AssertFails(tmp, TinyDir(tmp), data, [data, "line 2", "input_ids"]);
    }

    [TestMethod]
    public void TokenIdOutsideTheVocabulary()
    {
        using var tmp = new TempDir();
        var data = Data(tmp, "{\"input_ids\": [1, 2]}\n{\"input_ids\": [1, 64]}\n");
        AssertFails(tmp, TinyDir(tmp), data, [data, "line 2", "input_ids[1] = 64", "vocab_size 64"]);
    }

    [TestMethod]
    public void HalfPrecisionOnTheCpu()
    {
        using var tmp = new TempDir();
        AssertFails(tmp, TinyDir(tmp), Data(tmp), ["float16", "--device cuda"], "--dtype", "float16");
    }

    [TestMethod]
    public void AdapterTensorWithTheWrongShape()
    {
        var parity = TestFiles.Parity("llama-basic") ?? throw new AssertFailedException("shared/parity/llama-basic not found");
        using var tmp = new TempDir();
        var adapter = Path.Combine(tmp.Path, "adapter");
        Directory.CreateDirectory(adapter);
        File.Copy(Path.Combine(parity, "adapter_init", "adapter_config.json"), Path.Combine(adapter, "adapter_config.json"));
        var w = AdapterWeights.Load(Path.Combine(parity, "adapter_init"));
        var key = w.Keys.First(k => w[k].Shape.Length == 2 && w[k].Shape[0] != w[k].Shape[1]);
        var (_, shape, data) = w[key];
        w.Set(key, [shape[1], shape[0]], data);
        w.Save(adapter);
        AssertFails(tmp, Path.Combine(parity, "model"), Path.Combine(parity, "data.jsonl"),
            [$"'{key}'", $"[{shape[1]}, {shape[0]}]", $"[{shape[0]}, {shape[1]}]"], "--adapter", adapter);
    }
}
