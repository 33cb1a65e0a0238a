using System.Text.Json;
using MixLoRA.Cli;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.Inference.Export;
using MixLoRA.Inference.Generation;
using MixLoRA.Inference.Tests.Fixtures;
using MixLoRA.Runtime;
using MixLoRA.Trainer.Model;

namespace MixLoRA.Inference.Tests.Export;

/// <summary>
/// Issue 22's methods end to end on the parity model: build-graph and train (fused CPU kernels, dropout, the switch's
/// jitter) with a falling loss; the adapter holds MoE-PEFT's keys, its config and weights load back (also through
/// adapter_model.bin); and the exported decoder (ORT, KV-cache IO) gives the logits of the artifacts' own eval_step.onnx
/// with that adapter, within 1e-5.
/// </summary>
[TestClass]
public sealed class MethodExportTests
{
    private const int Batch = 2, SeqLen = 64;

    public TestContext TestContext { get; set; } = null!;

    [TestMethod]
    [DataRow("mixlora-switch")]
    [DataRow("loramoe")]
    [DataRow("mola")]
    [DataRow("hydralora")]
    public void TrainedAdapterLoadsBackAndExportsTheTrainingForward(string method)
    {
        var config = Config(method);
        var artifacts = Path.Combine(Files.TempDir(), "artifacts");
        Assert.AreEqual(0, Commands.Run(["build-graph", "--model", Files.ParityModel, "--adapter", config, "--out", artifacts,
            "--seq-len", $"{SeqLen}", "--micro-batch-size", $"{Batch}"]));
        var run = Path.Combine(Files.TempDir(), "run");
        Assert.AreEqual(0, Commands.Run(["train", "--artifacts", artifacts, "--data", Path.Combine(Files.Parity(), "data.jsonl"), "--out", run,
            "--batch-size", "6", "--steps", "6", "--lr", "0.01", "--no-shuffle", "--quiet", "--save-bin"]));
        var losses = File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("lm_loss").GetDouble()).ToArray();
        Assert.IsLessThan(losses[0] - 0.05, losses[^1], $"{method}: loss should fall: {string.Join(", ", losses)}");

        var adapter = Path.Combine(run, "adapter");
        var cfg = AdapterConfig.Load(adapter);
        Assert.AreEqual(AdapterConfig.Load(config).ToJson(), cfg.ToJson(), "the adapter's config reads back as given");
        var weights = AdapterWeights.Load(adapter);
        CollectionAssert.AreEquivalent(ExpectedKeys(cfg), weights.Keys.ToList(), $"{method}: MoE-PEFT's keys");
        var fromBin = AdapterWeights.Load(Path.Combine(adapter, AdapterWeights.BinName));
        foreach (var k in weights.Keys) CollectionAssert.AreEqual(weights[k].Data, fromBin[k].Data, k);

        var (ids, mask) = Batch2();
        var res = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir()) { AdapterDir = adapter });
        using var m = new ExportedModel(res.OutDir);
        var got = ExportParityTests.FullForward(m, ids, mask, Batch);
        var want = EvalStepLogits(artifacts, weights, ids, mask);
        var err = Reference.MaxRelAtRealTokens(want, got, mask, m.Config.VocabSize);
        Assert.IsLessThanOrEqualTo(1e-5, err, $"{method}: export vs the artifacts' eval_step: {err:G3}");
        var untrained = Reference.ForwardLogits(Files.ParityModel, ids, mask, Batch);
        Assert.IsGreaterThan(1e-3, Reference.MaxRelAtRealTokens(untrained, got, mask, m.Config.VocabSize), "the trained adapter changes the logits");
        TestContext.WriteLine($"{method}: lm_loss {string.Join(", ", losses.Select(x => x.ToString("F4", System.Globalization.CultureInfo.InvariantCulture)))}; export vs eval_step {err:G3}");
    }

    [TestMethod]
    public void RoutedAttentionDoesNotMerge()
    {
        var artifacts = Path.Combine(Files.TempDir(), "artifacts");
        Assert.AreEqual(0, Commands.Run(["build-graph", "--model", Files.ParityModel, "--adapter", Config("mola"), "--out", artifacts, "--seq-len", "16"]));
        var e = Assert.ThrowsExactly<GraphBuilder.UserError>(() => Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir())
        {
            AdapterDir = Path.Combine(artifacts, "adapter_init"), MergeAttentionLora = true,
        }));
        StringAssert.Contains(e.Message, "routed experts");

        // MLP-only MoLA with a per-layer list: merging has nothing to fold and the wrapped adapter still resolves the list
        var mlpOnly = Path.Combine(Files.TempDir(), "adapter_config.json");
        File.WriteAllText(mlpOnly, """{"peft_type": "MOLA", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["gate_proj", "down_proj"], "num_experts": [3, 2]}""");
        var art2 = Path.Combine(Files.TempDir(), "artifacts");
        Assert.AreEqual(0, Commands.Run(["build-graph", "--model", Files.ParityModel, "--adapter", mlpOnly, "--out", art2, "--seq-len", "16"]));
        var res = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir()) { AdapterDir = Path.Combine(art2, "adapter_init"), MergeAttentionLora = true });
        Assert.HasCount((2 * (1 + (2 * 3))) + (2 * (1 + (2 * 2))), res.AdapterTensors, "layer 0: 3 experts, layer 1: 2, on gate and down");
    }

    /// <summary>Every key MoE-PEFT's get_lora_layer_weight writes for this config (HydraLoRA: ours).</summary>
    private static List<string> ExpectedKeys(AdapterConfig cfg)
    {
        var keys = new List<string>();
        for (var l = 0; l < 2; l++)
            foreach (var m in cfg.TargetModules)
            {
                var mlp = AdapterConfig.FfnTargets.Contains(m);
                var key = $"{cfg.KeyPrefix}.layers.{l}.{(mlp ? "mlp" : "self_attn")}.{m}";
                var e = cfg.ExpertsAt(l, 2);
                if (cfg.IsMixLora && mlp) keys.AddRange(Enumerable.Range(0, e).SelectMany(i => new[] { $"{key}.experts.{i}.lora_A.weight", $"{key}.experts.{i}.lora_B.weight" }));
                else if (!cfg.RoutesProjection(m)) keys.AddRange([$"{key}.lora_A.weight", $"{key}.lora_B.weight"]);
                else
                {
                    keys.Add($"{key}.moe_gate.weight");
                    if (cfg.PeftType == "HYDRALORA") keys.Add($"{key}.lora_A.weight");
                    else keys.AddRange(Enumerable.Range(0, e).Select(i => $"{key}.experts.{i}.lora_A.weight"));
                    keys.AddRange(Enumerable.Range(0, e).Select(i => $"{key}.experts.{i}.lora_B.weight"));
                }
            }
        if (cfg.IsMixLora) keys.AddRange(Enumerable.Range(0, 2).Select(l => $"mixlora.layers.{l}.mlp.moe_gate.weight"));
        return keys;
    }

    private static string Config(string method)
    {
        var d = new Dictionary<string, object>
        {
            ["peft_type"] = method == "mixlora-switch" ? "MIXLORA" : method.ToUpperInvariant(), ["r"] = 4, ["lora_alpha"] = 8, ["lora_dropout"] = 0.05,
            ["target_modules"] = AdapterConfig.LlamaTargets.ToArray(), ["num_experts"] = method == "mola" ? new[] { 3, 2 } : 3,
        };
        if (method == "mixlora-switch") (d["routing_strategy"], d["expert_capacity"], d["router_aux_loss_coef"]) = (method, 4, 0.01);
        if (method == "mola") (d["top_k"], d["router_loss"]) = (2, true);
        var path = Path.Combine(Files.TempDir(), "adapter_config.json");
        File.WriteAllText(path, JsonSerializer.Serialize(d));
        return path;
    }

    /// <summary>The first two records of the parity data, right-padded to the graphs' sequence length.</summary>
    private static (long[] Ids, long[] Mask) Batch2()
    {
        var (ids, mask) = (new long[Batch * SeqLen], new long[Batch * SeqLen]);
        var rows = File.ReadLines(Path.Combine(Files.Parity(), "data.jsonl")).Take(Batch).ToArray();
        for (var r = 0; r < Batch; r++)
        {
            var row = JsonDocument.Parse(rows[r]).RootElement.GetProperty("input_ids").EnumerateArray().Select(x => x.GetInt64()).ToArray();
            row.CopyTo(ids, r * SeqLen);
            for (var i = 0; i < row.Length; i++) mask[(r * SeqLen) + i] = 1;
        }
        return (ids, mask);
    }

    /// <summary>The artifacts' eval_step.onnx (the training graphs' forward, with the CPU's fused kernels) on the batch.</summary>
    private static float[] EvalStepLogits(string artifacts, AdapterWeights adapter, long[] ids, long[] mask)
    {
        var path = Path.Combine(artifacts, "eval_step.onnx");
        var graph = OnnxReader.Load(path);
        using var model = new SafetensorsModel(Files.ParityModel);
        var feeds = new Dictionary<string, HostTensor>
        {
            ["input_ids"] = HostTensor.Of(ids, Batch, SeqLen), ["attention_mask"] = HostTensor.Of(mask, Batch, SeqLen), ["labels"] = HostTensor.Of(ids, Batch, SeqLen),
            ["position_ids"] = HostTensor.Of(Enumerable.Range(0, Batch * SeqLen).Select(i => (long)(i % SeqLen)).ToArray(), Batch, SeqLen),
        };
        foreach (var v in graph.Inputs.Where(v => !feeds.ContainsKey(v.Name)))
            feeds[v.Name] = adapter.TryGetValue(v.Name, out var t) ? HostTensor.Of(t.Data, t.Shape) : WeightLoader.Load(model, v.Name, v.DType);
        using var runner = new GraphRunner(OrtRuntime.Cpu, File.ReadAllBytes(path));
        return runner.Run(feeds, ["logits"])["logits"].Floats();
    }
}
