using MixLoRA.Cli.Bench;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;
using MixLoRA.Runtime.Kernels;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Tests.Model;
using MixLoRA.Trainer.Tests.Training;

namespace MixLoRA.Trainer.Tests.Kernels;

/// <summary>
/// The fused kernels (TrainSpec.Fused: com.mixlora.SwiGluSlots, SlotLora and SoftmaxCrossEntropy, CPU kernels) against
/// the graph composed from ONNX ops: the same loss and gradients for every routing strategy, target set and kernel subset
/// (All is the CPU's set, SwiGluSlots + CrossEntropy the GPU's).
/// The op's own rule is checked against finite differences in the catalog tests.
/// </summary>
[TestClass]
public sealed class FusedKernelTests
{
    [TestMethod]
    [DataRow("mixlora", 2, "gate_proj,up_proj,down_proj", FusedOps.All)]
    [DataRow("mixlora", 2, "gate_proj,up_proj,down_proj", FusedOps.SwiGluSlots | FusedOps.CrossEntropy)]
    [DataRow("mixlora", 2, "gate_proj,up_proj,down_proj", FusedOps.SlotLora)]
    [DataRow("mixlora", 3, "q_proj,v_proj,gate_proj,up_proj,down_proj", FusedOps.All)]
    [DataRow("mixlora", 2, "gate_proj,up_proj", FusedOps.All)]
    [DataRow("mixlora", 2, "up_proj,down_proj", FusedOps.All)]
    [DataRow("mixlora-dynamic", 0, "gate_proj,up_proj,down_proj", FusedOps.All)]
    [DataRow("mixlora-dynamic", 0, "gate_proj,up_proj,down_proj", FusedOps.SwiGluSlots | FusedOps.CrossEntropy)]
    public void FusedGraphGivesTheComposedGradients(string strategy, int topK, string targets, FusedOps ops)
    {
        var spec = new TrainSpec(BenchModels.Llama(64, 160, 2, 4, 2, 256, 256), Config(strategy, topK, targets.Split(','), 0),
            new Shapes(2, 16), DType.Float32, DType.Float32);
        var composed = TrainGraphs.GradStep(spec);
        var fused = TrainGraphs.GradStep(spec with { Fused = ops });
        int Count(string op) => fused.Graph.Nodes.Count(n => n.OpType == op);
        var mlp = targets.Split(',').Count(t => t is "gate_proj" or "up_proj" or "down_proj");          // expert projections
        var swiglu = ops.HasFlag(FusedOps.SwiGluSlots) && targets.Contains("gate_proj") && targets.Contains("up_proj");
        Assert.AreEqual(0, composed.Graph.Nodes.Count(n => n.Domain == "com.mixlora"));
        Assert.AreEqual(swiglu ? 2 : 0, Count("SwiGluSlots"), "one per layer");
        Assert.AreEqual(swiglu ? 2 : 0, Count("SwiGluSlotsGrad"));
        Assert.AreEqual(ops.HasFlag(FusedOps.SlotLora) ? 2 * mlp : 0, Count("SlotLora"), "one per layer and expert projection");
        Assert.AreEqual(ops.HasFlag(FusedOps.SlotLora) ? 2 * mlp : 0, Count("SlotLoraGrad"));
        Assert.AreEqual(ops.HasFlag(FusedOps.CrossEntropy) ? 1 : 0, Count("SoftmaxCrossEntropy"), "the loss");
        Assert.IsLessThan(composed.Graph.Nodes.Length, fused.Graph.Nodes.Length);

        // without dropout: the fused kernel draws its own masks (FusedDropout* below)
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
    public void FusedDropoutDropsTheRatioScalesTheRestAndDiffersPerSalt()
    {
        var b = new GraphBuilder.Building.Builder("drop");
        var g = b.Input("g", DType.Float32, 3, 4000);
        var w = b.Input("w", DType.Float32, 3, 2);
        var dg = b.Input("dg", DType.Float32, 3, 2, 4000);
        var seed = b.Input("seed", DType.Int64, Shape.Scalar);
        b.Output(b.SwiGluSlots(g, g, dg, dg, w).H, "h");
        b.Output(b.SwiGluSlots(g, g, dg, dg, w, seed, 0.25, salt: 0).H, "h0");
        b.Output(b.SwiGluSlots(g, g, dg, dg, w, seed, 0.25, salt: 1).H, "h1");
        using var run = new GraphRunner(OrtRuntime.Cpu, b.Build());
        var ones = Enumerable.Repeat(1f, 12000).ToArray();
        var r = run.Run(new Dictionary<string, HostTensor>
        {
            ["g"] = HostTensor.Of(ones[..12000], 3, 4000), ["dg"] = HostTensor.Of(Enumerable.Repeat(0.5f, 24000).ToArray(), 3, 2, 4000),
            ["w"] = HostTensor.Of([0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f], 3, 2), ["seed"] = HostTensor.Of([9L]),
        });
        var (h, h0, h1) = (r["h"].Floats(), r["h0"].Floats(), r["h1"].Floats());
        var dropped = h0.Count(v => v == 0) / (double)h0.Length;
        Assert.AreEqual(0.25, dropped, 0.01, "fraction dropped");
        for (var i = 0; i < h.Length; i++)
        {
            if (h0[i] != 0) Assert.AreEqual(h[i] / 0.75f, h0[i], 1e-5f, "kept values are scaled by 1/(1 − p)");
            if (h[i] != 0) Assert.AreEqual(DropoutHash.Keep(9, 0, i, 0.25), h0[i] != 0, $"element {i} follows Keep (the CUDA kernels' mask)");
        }
        var same = h0.Zip(h1, (a, c) => (a == 0) == (c == 0)).Count(x => x) / (double)h0.Length;
        Assert.IsLessThan(0.8, same, "another salt (layer) draws another mask");
    }

    [TestMethod]
    public void IntegerDropoutTestIsTheFloatOne()
    {
        // the CPU kernel compares Bits ≥ Threshold(ratio); Keep (and the CUDA kernels) compare Bits·2⁻²⁴ ≥ (float)ratio
        var rnd = new Random(5);
        double[] ratios = [0.05, 0.1, 0.2, 0.25, 1.0 / 3, 0.5, 0.9, 1e-7, 0.999999, .. Enumerable.Range(0, 50).Select(_ => rnd.NextDouble())];
        foreach (var ratio in ratios)
        {
            var t = DropoutHash.Threshold(ratio);
            foreach (var q in new ulong[] { t - 2, t - 1, t, t + 1, t + 2, 0, (1 << 24) - 1 })
            {
                if (q >= 1 << 24) continue;
                Assert.AreEqual((float)q * (1f / 16777216f) >= (float)ratio, q >= t, $"ratio {ratio}, bits {q}");
            }
        }
        var start = DropoutHash.Start(11, 3);
        for (long i = 0; i < 20000; i++) Assert.AreEqual(DropoutHash.Keep(11, 3, i, 0.3), DropoutHash.Bits(start, i) >= DropoutHash.Threshold(0.3));
    }

    [TestMethod]
    public void CheckpointingReplaysTheFusedDropout()
    {
        var spec = new TrainSpec(BenchModels.Llama(64, 160, 2, 4, 2, 256, 256), Config("mixlora", 2, ["q_proj", "gate_proj", "up_proj", "down_proj"], 0.2),
            new Shapes(2, 16), DType.Float32, DType.Float32, Fused: FusedOps.All);
        var stored = TrainGraphs.GradStep(spec);
        var recomputed = TrainGraphs.GradStep(spec with { Checkpointing = true });
        Assert.IsTrue(stored.Graph.Inputs.Any(i => i.Name == SwiGluSlotsOps.SeedInput), "the grad step takes the dropout seed");
        var feeds = GradStepHarness.Feeds(stored, 7, 27);
        var want = GradStepHarness.Run(GradStepHarness.Seeded(stored.Graph, 31), feeds, optimize: false);
        var got = GradStepHarness.Run(GradStepHarness.Seeded(recomputed.Graph, 31), feeds, optimize: false);
        Assert.AreEqual(want["loss"].Scalar(), got["loss"].Scalar(), 1e-6);
        var grads = want.Keys.Where(k => k.EndsWith(".grad", StringComparison.Ordinal)).ToArray();
        foreach (var k in grads) Assert.IsLessThanOrEqualTo(1e-5, Compare.MaxRelative(want[k].Floats(), got[k].Floats()), k);
        feeds[SwiGluSlotsOps.SeedInput] = HostTensor.Of([6L]);
        var other = GradStepHarness.Run(GradStepHarness.Seeded(stored.Graph, 31), feeds, optimize: false);
        Assert.IsTrue(grads.Any(k => Compare.MaxRelative(other[k].Floats(), got[k].Floats()) > 1e-3), "another seed should change some expert gradient");
    }

    [TestMethod]
    public void LoraUsesTheFusedLoss()
    {
        var spec = new TrainSpec(BenchModels.Llama(64, 160, 2, 4, 2, 256, 256), BenchModels.Adapter(new AdapterChoice("lora", Dropout: 0)),
            new Shapes(2, 16), DType.Float32, DType.Float32);
        var composed = TrainGraphs.GradStep(spec);
        var fused = TrainGraphs.GradStep(spec with { Fused = FusedOps.All });
        Assert.AreEqual(1, fused.Graph.Nodes.Count(n => n.OpType == "SoftmaxCrossEntropyGrad"));
        Assert.AreEqual(0, fused.Graph.Nodes.Count(n => n.OpType.StartsWith("SwiGlu", StringComparison.Ordinal) || n.OpType.StartsWith("SlotLora", StringComparison.Ordinal)));
        var feeds = GradStepHarness.Feeds(fused, 7, 27);
        var want = GradStepHarness.Run(composed.Graph, feeds, optimize: true);
        var got = GradStepHarness.Run(fused.Graph, feeds, optimize: true);
        Assert.AreEqual(want["loss"].Scalar(), got["loss"].Scalar(), 2e-6);
        Assert.AreEqual(want["valid_tokens"].Scalar(), got["valid_tokens"].Scalar());
        foreach (var k in want.Keys.Where(k => k.EndsWith(".grad", StringComparison.Ordinal))) Assert.IsLessThanOrEqualTo(2e-4, Compare.MaxRelative(want[k].Floats(), got[k].Floats()), k);
    }

    [TestMethod]
    public void EachDeviceGetsTheKernelsItHas()
    {
        Assert.AreEqual(FusedOps.All, FusedKernels.For(FusedOps.All, Device.Cpu, DType.Float32), "float32 C# kernels for all four");
        Assert.AreEqual(FusedOps.None, FusedKernels.For(FusedOps.None, Device.Cpu, DType.Float32), "--no-fused-kernels");
        Assert.AreEqual(FusedOps.None, FusedKernels.For(FusedOps.All, Device.Cpu, DType.Float64), "no float64 kernels");
        Assert.AreEqual(FusedOps.None, FusedKernels.For(FusedOps.All, Device.Cuda, DType.Float64), "no float64 CUDA kernels");
        CollectionAssert.AreEqual(new[] { "SwiGluSlots", "CrossEntropy", "SlotLora", "AdamW" }, FusedOpNames.Of(FusedOps.All));
        Assert.IsEmpty(FusedOpNames.Of(FusedOps.None));
    }

    [TestMethod]
    public void TheChoiceRoundTripsThroughItsNames()
    {
        Assert.AreEqual(FusedOps.SlotLora, FusedKernels.For(FusedOps.SlotLora, Device.Cpu, DType.Float32), "only what was asked for");
        var options = new System.Text.Json.JsonSerializerOptions { Converters = { new FusedOpsJsonConverter() } };
        foreach (var ops in new[] { FusedOps.None, FusedOps.SwiGluSlots | FusedOps.CrossEntropy, FusedOps.All })
        {
            Assert.AreEqual(ops, FusedOpNames.Parse(FusedOpNames.Of(ops)));
            var json = System.Text.Json.JsonSerializer.Serialize(ops, options);
            Assert.AreEqual(ops, System.Text.Json.JsonSerializer.Deserialize<FusedOps>(json, options), json);
        }
        Assert.IsNull(FusedOpNames.Parse(["SwiGluSlots", "Warp"]));
        Assert.IsNull(FusedOpNames.Parse(["All"]));
    }

    [TestMethod]
    public void DoraExpertsStayComposed()
    {
        var cfg = Config("mixlora", 2, ["gate_proj", "up_proj", "down_proj"], 0, dora: true);
        var g = TrainGraphs.GradStep(new TrainSpec(BenchModels.Llama(64, 160, 1, 4, 2, 256, 256), cfg, new Shapes(1, 8), DType.Float32, DType.Float32, Fused: FusedOps.All));
        Assert.AreEqual(0, g.Graph.Nodes.Count(n => n.Domain == "com.mixlora" && n.OpType != "SoftmaxCrossEntropy" && n.OpType != "SoftmaxCrossEntropyGrad"), "DoRA scales each slot's projections: not the fused ops' math");
    }

    [TestMethod]
    public void MoreSlotsThanTheKernelsHoldStayComposed()
    {
        var cfg = Config("mixlora-dynamic", 0, ["gate_proj", "up_proj", "down_proj"], 0, experts: 12);   // K = E = 12 slots
        var g = TrainGraphs.GradStep(new TrainSpec(BenchModels.Llama(64, 160, 1, 4, 2, 256, 256), cfg, new Shapes(1, 8), DType.Float32, DType.Float32, Fused: FusedOps.All));
        Assert.AreEqual(0, g.Graph.Nodes.Count(n => n.OpType.StartsWith("SwiGlu", StringComparison.Ordinal)));
        Assert.AreEqual(3, g.Graph.Nodes.Count(n => n.OpType == "SlotLora"), "SlotLora has no slot limit: gate, up, down of the one layer");
    }

    private static AdapterConfig Config(string strategy, int topK, string[] targets, double dropout, bool dora = false, int experts = 4)
    {
        var path = Path.Combine(TestFiles.TempDir(), "adapter_config.json");
        var d = new Dictionary<string, object>
        {
            ["peft_type"] = "MIXLORA", ["task_type"] = "CAUSAL_LM", ["r"] = 4, ["lora_alpha"] = 8, ["lora_dropout"] = dropout,
            ["target_modules"] = targets, ["routing_strategy"] = strategy, ["num_experts"] = experts,
        };
        if (topK > 0) d["top_k"] = topK;
        else d["top_p"] = 0.6;
        if (dora) d["use_dora"] = true;
        File.WriteAllText(path, System.Text.Json.JsonSerializer.Serialize(d));
        return AdapterConfig.Load(path);
    }
}
