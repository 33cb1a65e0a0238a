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

namespace MixLoRA.Trainer.Tests.Model;

/// <summary>Step 0 of the reference run: the MixLoRA graph's loss, logits and every adapter gradient.</summary>
[TestClass]
public sealed class AdapterParityTests
{
    private static string Dir => TestFiles.Parity("llama-basic") ?? throw new AssertFailedException("shared/parity/llama-basic not found");

    private static (CompiledGraph Graph, Dictionary<string, HostTensor> Feeds) Prepare(bool eval)
    {
        var cfg = ModelConfig.Load(Path.Combine(Dir, "model"));
        var adapter = AdapterConfig.Load(Path.Combine(Dir, "adapter_init"));
        var spec = new TrainSpec(cfg, adapter, new Shapes(2, 64), DType.Float32, DType.Float32);
        var g = eval ? TrainGraphs.EvalStep(spec) : TrainGraphs.GradStep(spec);
        using var model = new SafetensorsModel(Path.Combine(Dir, "model"));
        var feeds = WeightLoader.LoadHost(model, g.Weights);
        var weights = AdapterWeights.Load(Path.Combine(Dir, "adapter_init"));
        foreach (var t in g.Trainable) feeds[t.Key] = HostTensor.Of(weights[t.Key].Data, t.Shape);
        var examples = DatasetLoader.Load(DatasetSpec.FromArgs([Path.Combine(Dir, "data.jsonl")]), null);
        var batch = new BatchStream(examples, new BatchOptions(2, 2, 0, 64), DataPosition.Start(0)).NextStep()[0];
        feeds["input_ids"] = HostTensor.Of(batch.InputIds, 2, 64);
        feeds["attention_mask"] = HostTensor.Of(batch.AttentionMask, 2, 64);
        feeds["labels"] = HostTensor.Of(batch.Labels, 2, 64);
        Training.GradStepHarness.StepInputs(feeds, 2, 64);
        return (g, feeds);
    }

    [TestMethod]
    public void Step0GradientsMatchTheReference()
    {
        var (g, feeds) = Prepare(eval: false);
        using var runner = new GraphRunner(OrtRuntime.Cpu, g.Graph);
        var got = runner.Run(feeds);
        using var expected = new SafetensorsFile(Path.Combine(Dir, "expected", "grads_step0.safetensors"));
        Assert.HasCount(expected.Names.Count, g.Trainable, "trainable tensors vs reference gradient keys");
        float[] Grad(string k) => got[k + ".grad"].Floats();
        var worst = expected.Names.Select(k => (k, err: Compare.MaxRelative(expected.ReadFloat32(k), Grad(k)))).MaxBy(p => p.err);
        Assert.IsLessThanOrEqualTo(1e-4, worst.err, $"worst gradient {worst.k}: {worst.err:G3}");
        var losses = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir, "expected", "losses.json"))).RootElement[0];
        foreach (var key in new[] { "lm_loss", "aux_loss", "loss" })
        {
            var want = losses.GetProperty(key).GetDouble();
            Assert.AreEqual(want, got[key].Scalar(), 1e-4 * Math.Abs(want), key);
        }
    }

    [TestMethod]
    public void Step0LogitsMatchTheReference()
    {
        var (g, feeds) = Prepare(eval: true);
        using var runner = new GraphRunner(OrtRuntime.Cpu, g.Graph);
        var logits = runner.Run(feeds)["logits"];
        using var expected = new SafetensorsFile(Path.Combine(Dir, "expected", "logits_step0.safetensors"));
        var want = expected.ReadFloat32("logits");
        var shape = expected.Info("logits").Shape;                         // (2, T0, V), T0 = longest record
        var (t0, v) = ((int)shape[1], (int)shape[2]);
        var got = logits.Floats();
        var mask = feeds["attention_mask"].Longs();
        var picked = new float[want.Length];
        var real = new long[2 * t0];
        for (var row = 0; row < 2; row++)
        {
            for (var t = 0; t < t0; t++)
            {
                real[(row * t0) + t] = mask[(row * 64) + t];
                Array.Copy(got, ((row * 64) + t) * v, picked, ((row * t0) + t) * v, v);
            }
        }
        var err = Compare.MaxErrorAtRealTokens(want, picked, real, t0, v);
        Assert.IsLessThanOrEqualTo(1e-4, err, $"max |Δlogit| / max |logit| = {err:G3}");
    }
}
