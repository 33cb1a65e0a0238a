using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Tests.Fixtures;

namespace MixLoRA.Trainer.Tests.Model;

/// <summary>
/// Frozen base weights holding NaN or ±Inf are refused as they are loaded, naming the tensor and its file, instead
/// of the run stopping on a non-finite loss that blames --lr (issue 17).
/// </summary>
[TestClass]
[DoNotParallelize]
public sealed class NonFiniteWeightsTests
{
    private const string Broken = "model.layers.1.mlp.up_proj.weight";

    [TestMethod]
    public void CountsNaNAndInfinityInEveryFloatType()
    {
        float[] values = [1, float.NaN, -2, float.PositiveInfinity, 6e4f, float.NegativeInfinity, 0, -0f, 1e-7f, 3];
        var many = Enumerable.Range(0, 1000).Select(i => i % 97 == 0 ? float.NaN : i).ToArray();           // past the vector width
        foreach (var t in new[] { DType.Float32, DType.BFloat16, DType.Float16, DType.Float64 })
        {
            Assert.AreEqual(3L, NonFinite.Count(t, TensorConvert.FromFloat32(values, t)), t.ToString());
            Assert.AreEqual(11L, NonFinite.Count(t, TensorConvert.FromFloat32(many, t)), $"{t}, 1000 values");
        }
        Assert.AreEqual(0L, NonFinite.Count(DType.Int64, new byte[64]));
    }

    [TestMethod]
    public void TrainingAndScoringNameTheTensorAndTheFile()
    {
        var dir = TestFiles.TempDir();
        var model = Path.Combine(dir, "model");
        var tiny = new TinyModel();
        var w = tiny.Write(model);
        w[Broken].Data[17] = float.NaN;
        var weights = Path.Combine(model, "model.safetensors");
        SafetensorsWriter.WriteFloats(weights, w.Select(p => (p.Key, p.Value.Shape, p.Value.Data)));
        var adapter = TestFiles.Write(dir, "adapter_config.json",
            "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"lora_dropout\": 0.0, \"target_modules\": [\"q_proj\", \"v_proj\"]}");
        var data = TestFiles.Write(dir, "data.jsonl", "{\"input_ids\": [1, 5, 6, 7, 8]}\n{\"input_ids\": [1, 9, 10, 11]}\n");
        var artifacts = Path.Combine(dir, "artifacts");
        Assert.AreEqual(0, CliCapture.Run("build-graph", "--model", model, "--adapter", adapter, "--out", artifacts, "--seq-len", "8", "--micro-batch-size", "2").Code);

        var total = w[Broken].Data.Length;
        var expected = FormattableString.Invariant($"error: the base weights hold non-finite values: {Broken} in {weights} (1 of {total:N0} values are NaN or infinite)");
        var run = Path.Combine(dir, "run");
        var train = CliCapture.Run("train", "--artifacts", artifacts, "--data", data, "--out", run, "--batch-size", "2", "--steps", "2", "--quiet");
        AssertOneLine(train, expected);
        Assert.IsFalse(Directory.Exists(run), "nothing written before the check");

        var score = CliCapture.Run("score", "--model", model, "--data", data);
        AssertOneLine(score, expected);
    }

    [TestMethod]
    public void AWeightThatOverflowsTheGraphDtypeIsNamed()
    {
        var model = Path.Combine(TestFiles.TempDir(), "model");
        var w = new TinyModel().Write(model);
        w[Broken].Data[3] = 1e6f;                                                              // finite in float32, not in float16
        SafetensorsWriter.WriteFloats(Path.Combine(model, "model.safetensors"), w.Select(p => (p.Key, p.Value.Shape, p.Value.Data)));
        using var st = new SafetensorsModel(model);
        Assert.AreEqual(1e6f, MixLoRA.Trainer.Model.WeightLoader.Load(st, Broken, DType.BFloat16).Floats()[3], 1e4f, "bfloat16 holds it");
        var e = Assert.ThrowsExactly<MixLoRA.GraphBuilder.UserError>(() => MixLoRA.Trainer.Model.WeightLoader.Load(st, Broken, DType.Float16));
        StringAssert.Contains(e.Message, $"{Broken} in {Path.Combine(model, "model.safetensors")} does not fit float16: 1 values overflow");
        StringAssert.Contains(e.Message, "--dtype bfloat16");
    }

    /// <summary>A non-finite loss at the first step of a new run came before any update: the message does not blame --lr.</summary>
    [TestMethod]
    public void ANonFiniteFirstStepDoesNotBlameTheLearningRate()
    {
        var adapter = TestFiles.TempDir();
        var init = Path.Combine(MixLoRA.Trainer.Tests.Training.TrainFixture.ParityDir, "adapter_init");
        File.Copy(Path.Combine(init, "adapter_config.json"), Path.Combine(adapter, "adapter_config.json"));
        var weights = MixLoRA.GraphBuilder.Adapters.AdapterWeights.Load(init);
        weights[weights.Keys.First(k => k.Contains("lora_A", StringComparison.Ordinal))].Data[0] = float.NaN;
        weights.Save(adapter);
        var artifacts = MixLoRA.Trainer.Tests.Training.TrainFixture.Artifacts(adapter);
        var run = Path.Combine(TestFiles.TempDir(), "run");
        var r = CliCapture.Run("train", "--artifacts", artifacts, "--data", MixLoRA.Trainer.Tests.Training.TrainFixture.Data, "--out", run,
            "--batch-size", "2", "--steps", "3", "--quiet");
        Assert.AreEqual(1, r.Code, r.Err);
        StringAssert.Contains(r.Err, "at step 0");
        StringAssert.Contains(r.Err, "--lr is not the cause");
    }

    private static void AssertOneLine((int Code, string Err) r, string start)
    {
        Assert.AreEqual(1, r.Code, r.Err);
        Assert.AreEqual(1, r.Err.Trim().Split('\n').Length, $"one line:\n{r.Err}");
        StringAssert.StartsWith(r.Err, start);
        Assert.DoesNotContain("--lr", r.Err, "not blamed on the learning rate");
    }
}
