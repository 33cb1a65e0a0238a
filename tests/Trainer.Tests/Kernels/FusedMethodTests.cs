using MixLoRA.Cli.Bench;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Tests.Model;
using MixLoRA.Trainer.Tests.Training;

namespace MixLoRA.Trainer.Tests.Kernels;

/// <summary>
/// Issue 22's methods with the fused kernels where they apply, against the same graphs composed from ONNX ops:
/// mixlora-switch runs its one slot through SwiGluSlots and SlotLora (capacity 3, so tokens are dropped), MoLA each
/// routed projection through SlotLora; LoRAMoE and HydraLoRA mix every expert or head and stay composed (only the loss
/// is fused). Same loss, router loss and gradients.
/// </summary>
[TestClass]
public sealed class FusedMethodTests
{
    [TestMethod]
    [DataRow("mixlora-switch", FusedOps.All, 2, 6)]
    [DataRow("mixlora-switch", FusedOps.SwiGluSlots | FusedOps.CrossEntropy, 2, 0)]
    [DataRow("mola", FusedOps.All, 0, 14)]
    [DataRow("loramoe", FusedOps.All, 0, 0)]
    [DataRow("hydralora", FusedOps.All, 0, 0)]
    public void FusedGraphGivesTheComposedGradients(string method, FusedOps ops, int swiglu, int slotLora)
    {
        var spec = new TrainSpec(BenchModels.Llama(64, 160, 2, 4, 2, 256, 256), Config(method), new Shapes(2, 16), DType.Float32, DType.Float32);
        var composed = TrainGraphs.GradStep(spec);
        var fused = TrainGraphs.GradStep(spec with { Fused = ops });
        Assert.AreEqual(swiglu, fused.Graph.Nodes.Count(n => n.OpType == "SwiGluSlots"), "one per layer");
        Assert.AreEqual(slotLora, fused.Graph.Nodes.Count(n => n.OpType == "SlotLora"), "one per layer and routed projection");

        var feeds = GradStepHarness.Feeds(fused, 7, 27);
        var want = GradStepHarness.Run(GradStepHarness.Seeded(composed.Graph, 31), feeds, optimize: true);
        var got = GradStepHarness.Run(GradStepHarness.Seeded(fused.Graph, 31), feeds, optimize: true);
        Assert.AreEqual(want["loss"].Scalar(), got["loss"].Scalar(), 2e-6);
        Assert.AreEqual(want["aux_loss"].Scalar(), got["aux_loss"].Scalar(), 1e-7);
        var grads = want.Keys.Where(k => k.EndsWith(".grad", StringComparison.Ordinal)).ToArray();
        Assert.HasCount(fused.Trainable.Count, grads);
        foreach (var k in grads) Assert.IsLessThanOrEqualTo(2e-4, Compare.MaxRelative(want[k].Floats(), got[k].Floats()), k);
    }

    [TestMethod]
    [DataRow("mixlora-switch")]
    [DataRow("mola")]
    public void CheckpointingRecomputesTheSameGradients(string method)
    {
        var spec = new TrainSpec(BenchModels.Llama(64, 160, 2, 4, 2, 256, 256), Config(method), new Shapes(2, 16), DType.Float32, DType.Float32, Fused: FusedOps.All);
        var stored = TrainGraphs.GradStep(spec);
        var recomputed = TrainGraphs.GradStep(spec with { Checkpointing = true });
        var feeds = GradStepHarness.Feeds(stored, 7, 27);
        var want = GradStepHarness.Run(GradStepHarness.Seeded(stored.Graph, 31), feeds, optimize: false);
        var got = GradStepHarness.Run(GradStepHarness.Seeded(recomputed.Graph, 31), feeds, optimize: false);
        Assert.AreEqual(want["loss"].Scalar(), got["loss"].Scalar(), 1e-6);
        foreach (var k in want.Keys.Where(k => k.EndsWith(".grad", StringComparison.Ordinal)))
            Assert.IsLessThanOrEqualTo(1e-5, Compare.MaxRelative(want[k].Floats(), got[k].Floats()), k);
    }

    private static AdapterConfig Config(string method)
    {
        var d = new Dictionary<string, object>
        {
            ["peft_type"] = method.StartsWith("mixlora", StringComparison.Ordinal) ? "MIXLORA" : method.ToUpperInvariant(), ["r"] = 4, ["lora_alpha"] = 8,
            ["lora_dropout"] = 0.0, ["target_modules"] = AdapterConfig.LlamaTargets.ToArray(), ["num_experts"] = 4,
        };
        if (method == "mixlora-switch")
            (d["routing_strategy"], d["expert_capacity"], d["jitter_noise"], d["router_aux_loss_coef"]) = (method, 3, 0.0, 0.01);
        if (method == "mola") (d["top_k"], d["router_loss"], d["router_aux_loss_coef"]) = (2, true, 0.01);
        var path = Path.Combine(TestFiles.TempDir(), "adapter_config.json");
        File.WriteAllText(path, System.Text.Json.JsonSerializer.Serialize(d));
        return AdapterConfig.Load(path);
    }
}
