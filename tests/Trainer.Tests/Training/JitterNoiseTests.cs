using MixLoRA.Cli;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.Trainer.Tests.Data;

namespace MixLoRA.Trainer.Tests.Training;

/// <summary>
/// MixLoRA's router jitter (jitter_noise): no noise node when it is 0; with it, the eval graph is unchanged
/// and training sees fresh noise each step (same weights, same batch → different losses), finite gradients.
/// </summary>
[TestClass]
public sealed class JitterNoiseTests
{
    private static AdapterConfig Config(double jitter, string path)
    {
        File.WriteAllText(path, System.Text.Json.JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["peft_type"] = "MIXLORA", ["task_type"] = "CAUSAL_LM", ["r"] = 4, ["lora_alpha"] = 8, ["lora_dropout"] = 0.0,
            ["target_modules"] = new[] { "q_proj", "v_proj", "gate_proj", "up_proj", "down_proj" },
            ["routing_strategy"] = "mixlora", ["num_experts"] = 4, ["top_k"] = 2, ["jitter_noise"] = jitter,
        }));
        return AdapterConfig.Load(path);
    }

    private static (Graph Grad, Graph Eval) Graphs(double jitter)
    {
        var spec = new TrainSpec(ModelConfig.Load(TrainFixture.Model), Config(jitter, Path.Combine(TestFiles.TempDir(), "adapter_config.json")),
            new Shapes(2, 16), DType.Float32, DType.Float32);
        return (TrainGraphs.GradStep(spec).Graph, TrainGraphs.EvalStep(spec).Graph);
    }

    private static int Noise(Graph g) => g.Nodes.Count(n => n.OpType == "RandomUniformLike");

    [TestMethod]
    public void BFloat16GraphsDrawTheNoiseInFloat32()
    {
        // ONNX's RandomUniformLike has no bfloat16: the CUDA bf16 graph was refused by ORT until the draw went through fp32
        var spec = new TrainSpec(ModelConfig.Load(TrainFixture.Model), Config(0.1, Path.Combine(TestFiles.TempDir(), "adapter_config.json")),
            new Shapes(2, 16), DType.BFloat16, DType.BFloat16);
        var g = TrainGraphs.GradStep(spec).Graph;
        var draws = g.Nodes.Where(n => n.OpType == "RandomUniformLike").ToArray();
        Assert.IsNotEmpty(draws);
        foreach (var n in draws) Assert.AreEqual(DType.Float32, g.Get(n.Inputs[0]).DType, n.Name);
    }

    [TestMethod]
    public void ZeroJitterEmitsNoNoiseAndEvalGraphsIgnoreIt()
    {
        var (grad0, eval0) = Graphs(0.0);
        var (grad1, eval1) = Graphs(0.1);
        Assert.AreEqual(0, Noise(grad0));
        Assert.AreEqual(2, Noise(grad1), "one noise tensor per MoE layer");
        var jittered = grad1.Nodes.First(n => n.OpType == "RandomUniformLike");
        Assert.AreEqual(0.9f, (float)jittered.Attrs["low"], 1e-7f);
        Assert.AreEqual(1.1f, (float)jittered.Attrs["high"], 1e-7f);
        CollectionAssert.AreEqual(eval0.Nodes.Select(n => $"{n.OpType} {n.Name}").ToList(), eval1.Nodes.Select(n => $"{n.OpType} {n.Name}").ToList());
    }

    /// <summary>With lr 1e-12 the weights (float32) and the batch stay the same, so only the noise can change the loss.</summary>
    [TestMethod]
    [DataRow(0.0, false)]
    [DataRow(0.1, true)]
    public void JitterChangesTheTrainingLossStepToStep(double jitter, bool differ)
    {
        var config = Path.Combine(TestFiles.TempDir(), "adapter_config.json");
        Config(jitter, config);
        var output = Path.Combine(TestFiles.TempDir(), "run");
        Assert.AreEqual(0, Commands.Run(["train", "--artifacts", TrainFixture.Artifacts(config), "--data", TrainFixture.Data, "--out", output,
            "--batch-size", "6", "--steps", "3", "--lr", "1e-12", "--no-shuffle", "--quiet"]));
        var losses = TrainFixture.Losses(output);
        var norms = TrainFixture.Metrics(output).Select(m => m.GetProperty("grad_norm").GetDouble()).ToArray();
        Assert.IsTrue(losses.Concat(norms).All(double.IsFinite), string.Join(", ", losses.Concat(norms)));
        var spread = (losses.Max() - losses.Min()) / losses.Max();
        Assert.AreEqual(differ, spread > 1e-4, $"jitter {jitter}: losses {string.Join(", ", losses)}");
        if (!differ) Assert.IsLessThan(1e-6, spread, "without jitter the steps see the same weights and batch");
    }
}
