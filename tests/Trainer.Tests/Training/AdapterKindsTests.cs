using MixLoRA.Cli;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.Trainer.Tests.Data;

namespace MixLoRA.Trainer.Tests.Training;

/// <summary>
/// Issue 4's extras on the parity model: a trained MixLoRA adapter round-trips through the reference
/// `adapter_model.bin` format (and `--save-bin` writes both formats); a LoRA-only config and a
/// mixlora-dynamic (top-p) config build and train with a falling loss.
/// </summary>
[TestClass]
public sealed class AdapterKindsTests
{
    /// <summary>Trains the whole parity set as one batch (same records every step) and returns OUT.</summary>
    private static string TrainFullBatch(string artifacts, int steps, params string[] more)
    {
        var output = Path.Combine(TestFiles.TempDir(), "run");
        Assert.AreEqual(0, Commands.Run(["train", "--artifacts", artifacts, "--data", TrainFixture.Data, "--out", output, "--batch-size", "6",
            "--steps", steps.ToString(System.Globalization.CultureInfo.InvariantCulture), "--lr", "0.01", "--no-shuffle", "--quiet", .. more]));
        return output;
    }

    private static void AssertLossFalls(string output, int steps)
    {
        var losses = TrainFixture.Losses(output);
        Assert.HasCount(steps, losses);
        Assert.IsTrue(losses.All(double.IsFinite), string.Join(", ", losses));
        Assert.IsLessThan(losses[0] - 0.05, losses[^1], $"loss should fall: {string.Join(", ", losses)}");
    }

    [TestMethod]
    public void MixLoraAdapterRoundTripsThroughTheReferenceBinFormat()
    {
        var output = TrainFullBatch(TrainFixture.Artifacts(), 2, "--save-bin");
        var adapter = Path.Combine(output, "adapter");
        var fromSafetensors = AdapterWeights.Load(Path.Combine(adapter, AdapterWeights.SafetensorsName));
        var fromBin = AdapterWeights.Load(Path.Combine(adapter, AdapterWeights.BinName));
        Assert.IsTrue(fromSafetensors.Keys.Any(k => k.Contains("moe_gate", StringComparison.Ordinal)), "a MixLoRA adapter (router weights)");
        TrainFixture.AssertSameBits(fromSafetensors, fromBin);
        Assert.IsTrue(File.Exists(Path.Combine(adapter, AdapterConfig.FileName)));

        var binOnly = TestFiles.TempDir();
        fromSafetensors.Save(binOnly, AdapterWeightFormats.TorchBin);
        Assert.IsFalse(File.Exists(Path.Combine(binOnly, AdapterWeights.SafetensorsName)));
        TrainFixture.AssertSameBits(fromSafetensors, AdapterWeights.Load(binOnly));
    }

    [TestMethod]
    public void LoraOnlyConfigBuildsAndTrainsWithPeftKeys()
    {
        var config = TrainFixture.AdapterConfigFile(new Dictionary<string, object>
        {
            ["peft_type"] = "LORA", ["task_type"] = "CAUSAL_LM", ["r"] = 4, ["lora_alpha"] = 8, ["lora_dropout"] = 0.0,
            ["target_modules"] = new[] { "q_proj", "v_proj", "down_proj" },
        });
        var artifacts = Path.Combine(TestFiles.TempDir(), "artifacts");
        Assert.AreEqual(0, Commands.Run(["build-graph", "--model", TrainFixture.Model, "--adapter", config, "--out", artifacts, "--seq-len", "64", "--micro-batch-size", "2"]));
        var output = TrainFullBatch(artifacts, 5);
        AssertLossFalls(output, 5);
        Assert.IsFalse(TrainFixture.Metrics(output)[0].TryGetProperty("router_load", out _), "no router in plain LoRA");

        var expected = new List<string>();
        for (var l = 0; l < 2; l++)
        {
            foreach (var (block, module) in new[] { ("self_attn", "q_proj"), ("self_attn", "v_proj"), ("mlp", "down_proj") })
                foreach (var ab in new[] { "lora_A", "lora_B" }) expected.Add($"base_model.model.model.layers.{l}.{block}.{module}.{ab}.weight");
        }
        var got = AdapterWeights.Load(Path.Combine(output, "adapter"));
        CollectionAssert.AreEquivalent(expected, got.Keys.ToList());
        CollectionAssert.AreEqual(new long[] { 4, 64 }, got["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].Shape);
        CollectionAssert.AreEqual(new long[] { 64, 4 }, got["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"].Shape);
        Assert.AreEqual("LORA", AdapterConfig.Load(Path.Combine(output, "adapter")).PeftType);
    }

    [TestMethod]
    public void MixLoraDynamicConfigBuildsAndTrains()
    {
        var config = TrainFixture.AdapterConfigFile(new Dictionary<string, object>
        {
            ["peft_type"] = "MIXLORA", ["task_type"] = "CAUSAL_LM", ["r"] = 4, ["lora_alpha"] = 8, ["lora_dropout"] = 0.0,
            ["target_modules"] = new[] { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" },
            ["routing_strategy"] = "mixlora-dynamic", ["num_experts"] = 4, ["top_p"] = 0.6, ["temperature"] = 0.0, ["router_aux_loss_coef"] = 0.01,
        });
        var output = TrainFullBatch(TrainFixture.Artifacts(config), 5);
        AssertLossFalls(output, 5);
        var load = TrainFixture.Metrics(output)[^1].GetProperty("router_load");
        Assert.AreEqual(2, load.GetArrayLength(), "one row per layer");
        Assert.AreEqual(4, load[0].GetArrayLength(), "one column per expert");
        Assert.AreEqual("mixlora-dynamic", AdapterConfig.Load(Path.Combine(output, "adapter")).RoutingStrategy);
    }
}
