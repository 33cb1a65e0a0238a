using MixLoRA.Cli;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.Trainer.Tests.Data;

namespace MixLoRA.Trainer.Tests.Training;

/// <summary>
/// DoRA (use_dora) on the parity model: plain LoRA on every target and MixLoRA's attention LoRA build and
/// train with a falling loss; magnitudes are saved as `{prefix}.lora_magnitude_vector` and start at the row
/// norms of the frozen weight (B = 0); on MixLoRA experts each expert has its own magnitude per projection.
/// </summary>
[TestClass]
public sealed class DoraTrainingTests
{
    private static readonly string[] All = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    private static Dictionary<string, object> Config(string peft, string[] targets)
    {
        var c = new Dictionary<string, object>
        {
            ["peft_type"] = peft, ["task_type"] = "CAUSAL_LM", ["r"] = 4, ["lora_alpha"] = 8, ["lora_dropout"] = 0.05,
            ["target_modules"] = targets, ["use_dora"] = true,
        };
        if (peft == "MIXLORA") (c["routing_strategy"], c["num_experts"], c["top_k"]) = ("mixlora", 4, 2);
        return c;
    }

    private static string Train(string artifacts, int steps, bool falls = true)
    {
        var output = Path.Combine(TestFiles.TempDir(), "run");
        Assert.AreEqual(0, Commands.Run(["train", "--artifacts", artifacts, "--data", TrainFixture.Data, "--out", output, "--batch-size", "6",
            "--steps", steps.ToString(System.Globalization.CultureInfo.InvariantCulture), "--lr", "0.01", "--no-shuffle", "--quiet"]));
        var losses = TrainFixture.Losses(output);
        Assert.HasCount(steps, losses);
        Assert.IsTrue(losses.All(double.IsFinite), string.Join(", ", losses));
        if (falls) Assert.IsLessThan(losses[0] - 0.05, losses[^1], $"loss should fall: {string.Join(", ", losses)}");
        return output;
    }

    [TestMethod]
    public void LoraWithDoraTrainsAndStartsMagnitudesAtTheWeightRowNorms()
    {
        var artifacts = TrainFixture.Artifacts(TrainFixture.AdapterConfigFile(Config("LORA", All)));
        var init = AdapterWeights.Load(Path.Combine(artifacts, "adapter_init"));
        using (var model = new SafetensorsModel(TrainFixture.Model))
        {
            foreach (var (block, module) in new[] { ("self_attn", "q_proj"), ("mlp", "down_proj") })
            {
                var w = model.ReadTensor($"model.layers.1.{block}.{module}.weight");
                var (rows, cols) = (w.Dims[0], w.Dims[1]);
                var values = model.ReadFloat32($"model.layers.1.{block}.{module}.weight");
                var m = init[$"base_model.model.model.layers.1.{block}.{module}.lora_magnitude_vector"];
                CollectionAssert.AreEqual(new[] { rows }, m.Shape);
                for (var o = 0; o < rows; o++)
                {
                    var norm = Math.Sqrt(Enumerable.Range(0, (int)cols).Sum(i => (double)values[(o * cols) + i] * values[(o * cols) + i]));
                    Assert.AreEqual(norm, m.Data[o], 1e-5 * norm, $"{module} row {o}");
                }
            }
        }
        var output = Train(artifacts, 5);
        var got = AdapterWeights.Load(Path.Combine(output, "adapter"));
        var magnitudes = got.Keys.Where(k => k.EndsWith(".lora_magnitude_vector", StringComparison.Ordinal)).ToList();
        Assert.HasCount(2 * All.Length, magnitudes, "one magnitude per layer and target");
        foreach (var key in magnitudes)
        {
            Assert.IsTrue(got[key].Data.Zip(init[key].Data).Any(p => p.First != p.Second), $"{key} is trained");
            Assert.IsTrue(got[key.Replace("lora_magnitude_vector", "lora_B.weight", StringComparison.Ordinal)].Data.Any(v => v != 0), $"{key}: B moved off 0");
        }
        AssertForwardIsPeftDora(TrainFixture.AdapterConfigFile(Config("LORA", All)), got);
    }

    /// <summary>
    /// The trained adapter's logits (the training graphs' eval step, float32 on ORT) against an independent DoRA
    /// forward in float64: PEFT's DoRA layer computes (m / ‖W + s·B·A‖_row) ⊙ (W·x + s·B·A·x) (dropout off), the
    /// same as a plain linear layer with W' = diag(m / ‖W + s·B·A‖_row)·(W + s·B·A), s = lora_alpha / r; W' is
    /// formed here per target and handed to <see cref="Model.NaiveLlama"/>.
    /// </summary>
    private static void AssertForwardIsPeftDora(string adapterConfigFile, AdapterWeights trained)
    {
        const int T = 16;
        var cfg = GraphBuilder.Models.ModelConfig.Load(TrainFixture.Model);
        var adapter = AdapterConfig.Load(Path.GetDirectoryName(adapterConfigFile)!);
        var eval = GraphBuilder.Graphs.TrainGraphs.EvalStep(new GraphBuilder.Graphs.TrainSpec(cfg, adapter, new GraphBuilder.Graphs.Shapes(1, T), GraphBuilder.IR.DType.Float32, GraphBuilder.IR.DType.Float32));
        var rng = new Random(5);
        var ids = Enumerable.Range(0, T).Select(_ => rng.Next(3, cfg.VocabSize)).ToArray();
        Dictionary<string, Runtime.HostTensor> feeds;
        using (var model = new SafetensorsModel(TrainFixture.Model)) feeds = MixLoRA.Trainer.Model.WeightLoader.LoadHost(model, eval.Weights);
        foreach (var t in eval.Trainable) feeds[t.Key] = Runtime.HostTensor.Of(trained[t.Key].Data, t.Shape);
        feeds["input_ids"] = Runtime.HostTensor.Of(ids.Select(i => (long)i).ToArray(), 1, T);
        feeds["attention_mask"] = Runtime.HostTensor.Of(Enumerable.Repeat(1L, T).ToArray(), 1, T);
        feeds["labels"] = Runtime.HostTensor.Of(ids.Select(i => (long)i).ToArray(), 1, T);
        GradStepHarness.StepInputs(feeds, 1, T);
        float[] got;
        using (var runner = new Runtime.GraphRunner(Runtime.OrtRuntime.Cpu, eval.Graph)) got = runner.Run(feeds)["logits"].Floats();

        const double S = 8.0 / 4;                                                   // lora_alpha / r
        var w = new Dictionary<string, (long[] Shape, float[] Data)>();
        using (var model = new SafetensorsModel(TrainFixture.Model))
            foreach (var name in model.Names) w[name] = (model.ReadTensor(name).Dims.ToArray(), model.ReadFloat32(name));
        for (var l = 0; l < cfg.NumLayers; l++)
            foreach (var module in All)
            {
                var block = module is "gate_proj" or "up_proj" or "down_proj" ? "mlp" : "self_attn";
                var weight = $"model.layers.{l}.{block}.{module}.weight";
                var p = $"base_model.model.model.layers.{l}.{block}.{module}";
                var (a, bw, m) = (trained[$"{p}.lora_A.weight"], trained[$"{p}.lora_B.weight"], trained[$"{p}.lora_magnitude_vector"]);
                var (rows, cols, r) = (bw.Shape[0], a.Shape[1], a.Shape[0]);
                var merged = new float[rows * cols];
                for (var o = 0; o < rows; o++)
                {
                    var row = new double[cols];
                    for (var i = 0; i < cols; i++)
                    {
                        var delta = 0.0;
                        for (var k = 0; k < r; k++) delta += (double)bw.Data[(o * r) + k] * a.Data[(k * cols) + i];
                        row[i] = w[weight].Data[(o * cols) + i] + (S * delta);
                    }
                    var norm = Math.Sqrt(row.Sum(v => v * v));
                    for (var i = 0; i < cols; i++) merged[(o * cols) + i] = (float)(m.Data[o] / norm * row[i]);
                }
                w[weight] = (w[weight].Shape, merged);
            }
        var tiny = new Model.TinyModel
        {
            Hidden = cfg.HiddenSize, Intermediate = cfg.IntermediateSize, Layers = cfg.NumLayers, Heads = cfg.NumHeads, KvHeads = cfg.NumKvHeads,
            HeadDim = cfg.HeadDim, Vocab = cfg.VocabSize, Eps = 1e-5, Theta = 10000, Tied = false,
        };
        var want = Model.NaiveLlama.Forward(tiny, w, ids, [.. ids.Select(_ => 1)]);
        var scale = want.Max(row => row.Max(Math.Abs));
        var err = 0.0;
        for (var t = 0; t < T; t++)
            for (var k = 0; k < cfg.VocabSize; k++) err = Math.Max(err, Math.Abs(want[t][k] - got[(t * cfg.VocabSize) + k]));
        Assert.IsLessThanOrEqualTo(1e-5, err / scale, $"DoRA forward vs the PEFT formula: max |Δ| {err:G3} of max |logit| {scale:G3}");
    }

    /// <summary>The reference saves no magnitudes: loading its A/B recomputes them as ‖W + s·B·A‖ (s = 8/4).</summary>
    [TestMethod]
    public void AdapterWithoutMagnitudesGetsThemFromItsOwnLoraWeights()
    {
        var config = Config("LORA", ["q_proj"]);
        var trained = AdapterWeights.Load(Path.Combine(Train(TrainFixture.Artifacts(TrainFixture.AdapterConfigFile(config)), 2, falls: false), "adapter"));
        var dir = TestFiles.TempDir();
        var reference = new AdapterWeights();
        foreach (var k in trained.Keys.Where(k => !k.EndsWith(".lora_magnitude_vector", StringComparison.Ordinal))) reference.Set(k, trained[k].Shape, trained[k].Data);
        reference.Save(dir);
        File.Copy(TrainFixture.AdapterConfigFile(config), Path.Combine(dir, AdapterConfig.FileName));
        var init = AdapterWeights.Load(Path.Combine(TrainFixture.Artifacts(dir), "adapter_init"));

        const string p = "base_model.model.model.layers.0.self_attn.q_proj";
        var (a, bw, m) = (init[$"{p}.lora_A.weight"], init[$"{p}.lora_B.weight"], init[$"{p}.lora_magnitude_vector"]);
        CollectionAssert.AreEqual(reference[$"{p}.lora_B.weight"].Data, bw.Data);
        Assert.IsTrue(bw.Data.Any(v => v != 0), "B was trained, so the norm is not just ‖W‖");
        using var model = new SafetensorsModel(TrainFixture.Model);
        var w = model.ReadFloat32("model.layers.0.self_attn.q_proj.weight");
        var (rows, cols, r) = (bw.Shape[0], a.Shape[1], a.Shape[0]);
        for (var o = 0; o < rows; o++)
        {
            var sum = 0.0;
            for (var i = 0; i < cols; i++)
            {
                var v = w[(o * cols) + i] + (2.0 * Enumerable.Range(0, (int)r).Sum(k => (double)bw.Data[(o * r) + k] * a.Data[(k * cols) + i]));
                sum += v * v;
            }
            Assert.AreEqual(Math.Sqrt(sum), m.Data[o], 1e-5 * Math.Sqrt(sum), $"row {o}");
        }
    }

    [TestMethod]
    public void MixLoraAttentionDoraTrains()
    {
        var config = Config("MIXLORA", All);
        config["expert_lora"] = new Dictionary<string, object> { ["r"] = 4, ["lora_alpha"] = 8, ["lora_dropout"] = 0.05, ["use_dora"] = false };
        var output = Train(TrainFixture.Artifacts(TrainFixture.AdapterConfigFile(config)), 5);
        var keys = AdapterWeights.Load(Path.Combine(output, "adapter")).Keys.Where(k => k.EndsWith(".lora_magnitude_vector", StringComparison.Ordinal)).ToList();
        Assert.HasCount(8, keys, string.Join(", ", keys));
        Assert.IsTrue(keys.All(k => k.StartsWith("mixlora.layers.", StringComparison.Ordinal) && k.Contains(".self_attn.", StringComparison.Ordinal)), string.Join(", ", keys));
    }

    /// <summary>
    /// use_dora on all 7 targets of MIXLORA: every expert gets a magnitude per projection, starting at the row
    /// norms of the shared frozen weight (B = 0), trained and saved under the expert's key.
    /// </summary>
    [TestMethod]
    public void MixLoraExpertDoraTrainsAndSavesExpertMagnitudes()
    {
        var artifacts = TrainFixture.Artifacts(TrainFixture.AdapterConfigFile(Config("MIXLORA", All)));
        var init = AdapterWeights.Load(Path.Combine(artifacts, "adapter_init"));
        using (var model = new SafetensorsModel(TrainFixture.Model))
        {
            var w = model.ReadTensor("model.layers.1.mlp.down_proj.weight");
            var (rows, cols) = (w.Dims[0], w.Dims[1]);
            var values = model.ReadFloat32("model.layers.1.mlp.down_proj.weight");
            var m = init["mixlora.layers.1.mlp.down_proj.experts.3.lora_magnitude_vector"];
            CollectionAssert.AreEqual(new[] { rows }, m.Shape);
            for (var o = 0; o < rows; o++)
            {
                var norm = Math.Sqrt(Enumerable.Range(0, (int)cols).Sum(i => (double)values[(o * cols) + i] * values[(o * cols) + i]));
                Assert.AreEqual(norm, m.Data[o], 1e-5 * norm, $"row {o}");
            }
        }
        var got = AdapterWeights.Load(Path.Combine(Train(artifacts, 5), "adapter"));
        var keys = got.Keys.Where(k => k.EndsWith(".lora_magnitude_vector", StringComparison.Ordinal)).ToList();
        Assert.HasCount((2 * 4) + (2 * 3 * 4), keys, string.Join(", ", keys));
        foreach (var module in new[] { "gate_proj", "up_proj", "down_proj" })
        {
            var key = $"mixlora.layers.0.mlp.{module}.experts.0.lora_magnitude_vector";
            Assert.IsTrue(keys.Contains(key), key);
        }
        var trained = keys.Where(k => k.Contains(".experts.", StringComparison.Ordinal) && got[k].Data.Zip(init[k].Data).Any(p => p.First != p.Second)).ToList();
        Assert.IsNotEmpty(trained, "expert magnitudes are trained");
    }
}
