using MixLoRA.Cli.Bench;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Tests.Model;

namespace MixLoRA.Trainer.Tests.Training;

/// <summary>
/// Activation checkpointing (TrainSpec.Checkpointing): the recomputed backward must give the stored
/// backward's loss and gradients, dropout included (the recomputation replays the forward's masks).
/// </summary>
[TestClass]
public sealed class CheckpointingTests
{
    [TestMethod]
    [DataRow("mixlora", 0.0)]
    [DataRow("lora", 0.0)]
    [DataRow("mixlora", 0.2)]
    [DataRow("lora", 0.2)]
    public void RecomputedLayersGiveTheStoredGradients(string method, double dropout)
    {
        var spec = new TrainSpec(BenchModels.Llama(64, 160, 2, 4, 2, 256, 256), BenchModels.Adapter(new AdapterChoice(method, Dropout: dropout)),
            new Shapes(2, 16), DType.Float32, DType.Float32);
        var stored = TrainGraphs.GradStep(spec);
        var recomputed = TrainGraphs.GradStep(spec with { Checkpointing = true });
        Assert.IsTrue(recomputed.Graph.Nodes.Any(n => n.Name.Contains("recompute", StringComparison.Ordinal)), "the layers are emitted again");
        Assert.AreEqual(stored.Graph.Nodes.Count(n => n.OpType == "Dropout"), recomputed.Graph.Nodes.Count(n => n.OpType == "Dropout"), "dropout is replayed, not redrawn");

        // With dropout, both graphs get the same seeded masks, and ORT's graph optimizations are off: with
        // them on, the stored graph's seeded Dropouts drew different masks than the same nodes unoptimized
        // (observed while writing this test; ORT behaviour), while the checkpointed graph's did not change.
        var optimize = dropout == 0;
        var feeds = GradStepHarness.Feeds(recomputed, 5, 29);
        var want = GradStepHarness.Run(GradStepHarness.Seeded(stored.Graph, 11), feeds, optimize);
        var got = GradStepHarness.Run(GradStepHarness.Seeded(recomputed.Graph, 11), feeds, optimize);
        Assert.AreEqual(want["loss"].Scalar(), got["loss"].Scalar(), 1e-6);
        var grads = want.Keys.Where(k => k.EndsWith(".grad", StringComparison.Ordinal)).ToArray();
        Assert.HasCount(recomputed.Trainable.Count, grads);
        foreach (var k in grads) Assert.IsLessThanOrEqualTo(1e-5, Compare.MaxRelative(want[k].Floats(), got[k].Floats()), k);
        if (dropout == 0) return;

        // the comparison sees the masks: with other seeds some gradient moves
        var other = GradStepHarness.Run(GradStepHarness.Seeded(stored.Graph, 12), feeds, optimize);
        Assert.IsTrue(grads.Any(k => Compare.MaxRelative(other[k].Floats(), got[k].Floats()) > 1e-3), "other dropout masks should change some gradient");
    }

    [TestMethod]
    public void RouterJitterIsReusedNotRedrawn()
    {
        var path = Path.Combine(TestFiles.TempDir(), "adapter_config.json");
        File.WriteAllText(path, System.Text.Json.JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["peft_type"] = "MIXLORA", ["task_type"] = "CAUSAL_LM", ["r"] = 4, ["lora_alpha"] = 8, ["lora_dropout"] = 0.1,
            ["target_modules"] = new[] { "q_proj", "v_proj", "gate_proj", "up_proj", "down_proj" },
            ["routing_strategy"] = "mixlora", ["num_experts"] = 4, ["top_k"] = 2, ["jitter_noise"] = 0.2,
        }));
        var spec = new TrainSpec(BenchModels.Llama(64, 160, 2, 4, 2, 256, 256), AdapterConfig.Load(path), new Shapes(2, 16), DType.Float32, DType.Float32);
        var stored = TrainGraphs.GradStep(spec);
        var recomputed = TrainGraphs.GradStep(spec with { Checkpointing = true });
        Assert.AreEqual(stored.Graph.Nodes.Count(n => n.OpType == "RandomUniformLike"), recomputed.Graph.Nodes.Count(n => n.OpType == "RandomUniformLike"));
        var feeds = GradStepHarness.Feeds(recomputed, 5, 29);
        var want = GradStepHarness.Run(GradStepHarness.Seeded(stored.Graph, 21), feeds, optimize: false);
        var got = GradStepHarness.Run(GradStepHarness.Seeded(recomputed.Graph, 21), feeds, optimize: false);
        Assert.AreEqual(want["loss"].Scalar(), got["loss"].Scalar(), 1e-6);
        foreach (var k in want.Keys.Where(k => k.EndsWith(".grad", StringComparison.Ordinal)))
        {
            Assert.IsLessThanOrEqualTo(1e-5, Compare.MaxRelative(want[k].Floats(), got[k].Floats()), k);
        }
    }
}
