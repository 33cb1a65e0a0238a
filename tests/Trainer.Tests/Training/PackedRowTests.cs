using System.Text.Json.Nodes;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.Runtime;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Data;
using MixLoRA.Trainer.Model;
using MixLoRA.Trainer.Tests.Data;

namespace MixLoRA.Trainer.Tests.Training;

/// <summary>
/// Issue 19: records packed into one row give, token for token, the logits each record gives alone (block-diagonal
/// attention, positions restarting per record, Gemma 2's sliding window counted within the record), through the
/// training graphs' eval step with a MixLoRA adapter of random weights, on every family's tiny checkpoint.
/// </summary>
[TestClass]
public sealed class PackedRowTests
{
    private const int B = 2, T = 40;

    [TestMethod]
    [DynamicData(nameof(MixLoRA.Tests.TestRepo.Families), typeof(MixLoRA.Tests.TestRepo))]
    public void EachPackedRecordGetsTheLogitsItGetsAlone(string family)
    {
        var dir = MixLoRA.Tests.TestRepo.FamilyCase(family);
        var cfg = ModelConfig.Load(Path.Combine(dir, "model"));
        var examples = DatasetLoader.Load(DatasetSpec.FromArgs([Path.Combine(dir, "data.jsonl")]), null).Take(3).ToList();
        Assert.IsLessThanOrEqualTo(T, examples.Sum(e => e.Length), "the three records fit one row");
        var eval = TrainGraphs.EvalStep(new TrainSpec(cfg, MixLora(family), new Shapes(B, T), DType.Float32, DType.Float32));
        Dictionary<string, HostTensor> feeds;
        using (var model = new SafetensorsModel(Path.Combine(dir, "model"))) feeds = WeightLoader.LoadHost(model, eval.Weights);
        var rng = new Random(11);
        foreach (var t in eval.Trainable) feeds[t.Key] = HostTensor.Of(Enumerable.Range(0, (int)t.Count).Select(_ => (float)(0.1 * ((2 * rng.NextDouble()) - 1))).ToArray(), t.Shape);
        using var runner = new GraphRunner(OrtRuntime.Cpu, eval.Graph);

        var packed = Run(runner, feeds, Packing.Fill(examples, [[0, 1, 2]], B, T, 0));
        var v = cfg.VocabSize;
        var at = 0;
        for (var k = 0; k < examples.Count; k++)
        {
            var alone = Run(runner, feeds, Packing.Fill(examples, [[k]], B, T, 0));
            for (var i = 0; i < examples[k].Length * v; i++)
            {
                var (want, got) = (alone[i], packed[(at * v) + i]);
                Assert.AreEqual(want, got, 1e-5 * Math.Max(1, Math.Abs(want)), $"{family}: record {k}, token {i / v}, vocab {i % v}");
            }
            at += examples[k].Length;
        }
    }

    [TestMethod]
    public void WithoutTheRecordIdsTheRecordsWouldSeeEachOther()
    {
        // the same packed row with every token marked as one record: the second record's logits change (the check is not empty)
        var dir = MixLoRA.Tests.TestRepo.FamilyCase("llama3");
        var cfg = ModelConfig.Load(Path.Combine(dir, "model"));
        var examples = DatasetLoader.Load(DatasetSpec.FromArgs([Path.Combine(dir, "data.jsonl")]), null).Take(2).ToList();
        var eval = TrainGraphs.EvalStep(new TrainSpec(cfg, MixLora("llama3"), new Shapes(B, T), DType.Float32, DType.Float32));
        Dictionary<string, HostTensor> feeds;
        using (var model = new SafetensorsModel(Path.Combine(dir, "model"))) feeds = WeightLoader.LoadHost(model, eval.Weights);
        foreach (var t in eval.Trainable) feeds[t.Key] = HostTensor.Of(new float[t.Count], t.Shape);
        using var runner = new GraphRunner(OrtRuntime.Cpu, eval.Graph);
        var batch = Packing.Fill(examples, [[0, 1]], B, T, 0);
        var packed = Run(runner, feeds, batch);
        var merged = Run(runner, feeds, batch with { AttentionMask = batch.AttentionMask.Select(m => m == 0 ? 0L : 1L).ToArray() });
        var second = examples[0].Length * cfg.VocabSize;
        Assert.IsGreaterThan(1e-3, Enumerable.Range(second, examples[1].Length * cfg.VocabSize).Max(i => Math.Abs(packed[i] - merged[i])));
    }

    private static float[] Run(GraphRunner runner, Dictionary<string, HostTensor> feeds, Batch batch)
    {
        feeds["input_ids"] = HostTensor.Of(batch.InputIds, B, T);
        feeds["attention_mask"] = HostTensor.Of(batch.AttentionMask, B, T);
        feeds["position_ids"] = HostTensor.Of(batch.PositionIds, B, T);
        feeds["labels"] = HostTensor.Of(batch.Labels, B, T);
        return runner.Run(feeds, [TrainGraphs.Logits])[TrainGraphs.Logits].Floats();
    }

    /// <summary>MixLoRA (4 experts, top-2) on every projection of the family.</summary>
    public static AdapterConfig MixLora(string family, string peftType = "MIXLORA")
    {
        var targets = family == "phi3" ? AdapterConfig.FusedTargets : AdapterConfig.LlamaTargets;
        var path = Path.Combine(TestFiles.TempDir(), "adapter_config.json");
        File.WriteAllText(path, Config(peftType, targets).ToJsonString());
        return AdapterConfig.Load(path);
    }

    public static JsonObject Config(string peftType, IEnumerable<string> targets) => new()
    {
        ["peft_type"] = peftType, ["r"] = 4, ["lora_alpha"] = 8, ["lora_dropout"] = 0.0, ["routing_strategy"] = "mixlora",
        ["num_experts"] = 4, ["top_k"] = 2, ["router_aux_loss_coef"] = 0.01,
        ["target_modules"] = new JsonArray([.. targets.Select(t => (JsonNode)t)]),
    };
}
