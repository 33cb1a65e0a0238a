using System.Text.Json;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.Cli;
using MixLoRA.Trainer.Model;
using MixLoRA.Runtime;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Tests.Fixtures;

namespace MixLoRA.Trainer.Tests.Model;

/// <summary>
/// The model families against transformers 5.17 + PEFT 0.21 (tests/fixtures/families, made on the device by
/// tools/make-family-cases.py): the base logits of a right-padded batch, and three PEFT LoRA AdamW steps from
/// PEFT's own saved (random) adapter, per-step loss and final adapter.
/// </summary>
[TestClass]
public sealed class FamilyParityTests
{
    private static string Case(string family) => MixLoRA.Tests.TestRepo.FamilyCase(family);

    [TestMethod]
    [DynamicData(nameof(MixLoRA.Tests.TestRepo.Families), typeof(MixLoRA.Tests.TestRepo))]
    public void BaseLogitsMatchTransformers(string family)
    {
        Assert.AreEqual(family == "llama3" ? "llama" : family, ModelConfig.Load(Path.Combine(Case(family), "model")).ModelType);
        var err = BaseParityTests.MaxLogitError(Case(family));
        Assert.IsLessThanOrEqualTo(1e-4, err, $"{family}: max |Δlogit| / max |logit| = {err:G3}");
    }

    [TestMethod]
    [DynamicData(nameof(MixLoRA.Tests.TestRepo.Families), typeof(MixLoRA.Tests.TestRepo))]
    public void ThreeLoraStepsMatchPeft(string family)
    {
        var dir = Case(family);
        var work = TestFiles.TempDir();
        var (artifacts, output) = (Path.Combine(work, "artifacts"), Path.Combine(work, "run"));
        Assert.AreEqual(0, Commands.Run(["build-graph", "--model", Path.Combine(dir, "model"), "--adapter", Path.Combine(dir, "adapter_init"),
            "--out", artifacts, "--seq-len", "12", "--micro-batch-size", "2", "--dtype", "float32", "--device", "cpu"]));
        Assert.AreEqual(0, Commands.Run(["train", "--artifacts", artifacts, "--data", Path.Combine(dir, "data.jsonl"), "--out", output,
            "--batch-size", "2", "--micro-batch-size", "2", "--steps", "3", "--lr", "0.01", "--weight-decay", "0.01",
            "--lr-scheduler", "constant", "--no-shuffle", "--quiet"]));

        var expected = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "expected", "losses.json"))).RootElement;
        var lines = File.ReadAllLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.HasCount(3, lines);
        for (var k = 0; k < 3; k++)
        {
            var want = expected[k].GetProperty("loss").GetDouble();
            Assert.AreEqual(want, lines[k].GetProperty("loss").GetDouble(), 1e-4 * Math.Abs(want), $"{family} step {k} loss");
        }

        var final = AdapterWeights.Load(Path.Combine(dir, "adapter_final"));
        var got = AdapterWeights.Load(Path.Combine(output, "adapter"));
        CollectionAssert.AreEquivalent(final.Keys.ToArray(), got.Keys.ToArray());
        double diff = 0, norm = 0, moved = 0;
        var init = AdapterWeights.Load(Path.Combine(dir, "adapter_init"));
        foreach (var k in final.Keys)
        {
            var (a, b, c) = (final[k].Data, got[k].Data, init[k].Data);
            for (var i = 0; i < a.Length; i++)
            {
                (diff, norm) = (diff + ((a[i] - b[i]) * (double)(a[i] - b[i])), norm + (a[i] * (double)a[i]));
                moved += (a[i] - c[i]) * (double)(a[i] - c[i]);
            }
        }
        var rel = Math.Sqrt(diff / norm);
        Assert.IsGreaterThan(1e-3, Math.Sqrt(moved / norm), $"{family}: PEFT's adapter barely moved, the check would be empty");
        Assert.IsLessThanOrEqualTo(1e-4, rel, $"{family}: relative L2 distance of the final adapter: {rel:G3}");
    }

    [TestMethod]
    [DynamicData(nameof(MixLoRA.Tests.TestRepo.Families), typeof(MixLoRA.Tests.TestRepo))]
    public void MixLoraTrainsOnEveryFamily(string family)
    {
        var dir = Case(family);
        var work = TestFiles.TempDir();
        var targets = family == "phi3" ? AdapterConfig.FusedTargets : AdapterConfig.LlamaTargets;
        var adapter = Path.Combine(work, "adapter_config.json");
        File.WriteAllText(adapter, new System.Text.Json.Nodes.JsonObject
        {
            ["peft_type"] = "MIXLORA", ["r"] = 4, ["lora_alpha"] = 8, ["lora_dropout"] = 0.0, ["routing_strategy"] = "mixlora",
            ["num_experts"] = 4, ["top_k"] = 2, ["router_aux_loss_coef"] = 0.01,
            ["target_modules"] = new System.Text.Json.Nodes.JsonArray([.. targets.Select(t => (System.Text.Json.Nodes.JsonNode)t)]),
        }.ToJsonString());
        var (artifacts, output) = (Path.Combine(work, "artifacts"), Path.Combine(work, "run"));
        Assert.AreEqual(0, Commands.Run(["build-graph", "--model", Path.Combine(dir, "model"), "--adapter", adapter,
            "--out", artifacts, "--seq-len", "12", "--micro-batch-size", "2", "--seed", "3"]));
        Assert.AreEqual(0, Commands.Run(["train", "--artifacts", artifacts, "--data", Path.Combine(dir, "data.jsonl"), "--out", output,
            "--batch-size", "2", "--steps", "24", "--lr", "0.02", "--no-shuffle", "--quiet"]));
        var losses = File.ReadAllLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("lm_loss").GetDouble()).ToArray();
        Assert.IsTrue(losses.All(double.IsFinite), $"{family}: {string.Join(", ", losses)}");
        // the 6 records cycle every 3 steps: the same records' loss at the end is well below the start
        var (first, last) = (losses.Take(3).Average(), losses.TakeLast(3).Average());
        Assert.IsLessThan(first - 0.3, last, $"{family}: lm_loss {first:F3} → {last:F3}");

        var trained = AdapterWeights.Load(Path.Combine(output, "adapter"));
        var gateUp = family == "phi3" ? "gate_up_proj" : "gate_proj";
        var a = trained[$"mixlora.layers.1.mlp.{gateUp}.experts.3.lora_B.weight"];
        var cfg = ModelConfig.Load(Path.Combine(dir, "model"));
        CollectionAssert.AreEqual(new long[] { family == "phi3" ? 2 * cfg.IntermediateSize : cfg.IntermediateSize, 4 }, a.Shape.ToArray());
        Assert.IsTrue(a.Data.Any(x => x != 0), $"{family}: the experts' B never moved from 0");
    }
}
