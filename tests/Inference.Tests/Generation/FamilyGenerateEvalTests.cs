using System.Text.Json;
using MixLoRA.Cli;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.Inference.Tests.Fixtures;
using MixLoRA.Runtime;
using MixLoRA.Text.Data;

namespace MixLoRA.Inference.Tests.Generation;

/// <summary>
/// Every model family (tests/fixtures/families) through the commands, with PEFT's trained LoRA adapter of the
/// fixture and with a random MixLoRA adapter: `export`, then `generate` (greedy) prints exactly the decoding of
/// the ids an independent greedy loop picks (the training-side forward graph with the adapter over the whole
/// sequence at each step, no cache), and `eval` on a three-record ARC file predicts the label the forward
/// graph scores highest, reports an accuracy in [0, 1], and per-layer expert load for MixLoRA (rows summing to 1).
/// </summary>
[TestClass]
[DoNotParallelize]
public sealed class FamilyGenerateEvalTests
{
    private const int MaxNew = 6;

    public static IEnumerable<object[]> Cases =>
        MixLoRA.Tests.TestRepo.Families.SelectMany(f => new[] { new object[] { f[0], "lora" }, new object[] { f[0], "mixlora" } });

    private static string Model(string family) => Path.Combine(MixLoRA.Tests.TestRepo.FamilyCase(family), "model");

    /// <summary>The adapter folder: the fixture's PEFT LoRA (adapter_final), or a MixLoRA one with random non-zero weights.</summary>
    private static string Adapter(string family, string method) =>
        method == "lora" ? Path.Combine(MixLoRA.Tests.TestRepo.FamilyCase(family), "adapter_final") : WriteMixLora(family);

    private static string WriteMixLora(string family)
    {
        var dir = Files.TempDir();
        var targets = family == "phi3" ? AdapterConfig.FusedTargets : AdapterConfig.LlamaTargets;
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), new System.Text.Json.Nodes.JsonObject
        {
            ["peft_type"] = "MIXLORA", ["task_type"] = "CAUSAL_LM", ["r"] = 4, ["lora_alpha"] = 8, ["lora_dropout"] = 0.0, ["routing_strategy"] = "mixlora",
            ["num_experts"] = 4, ["top_k"] = 2, ["router_aux_loss_coef"] = 0.01,
            ["target_modules"] = new System.Text.Json.Nodes.JsonArray([.. targets.Select(t => (System.Text.Json.Nodes.JsonNode)t)]),
        }.ToJsonString());
        var adapter = TestLora.Graph(dir);
        ForwardGraph.Logits(ModelConfig.Load(Model(family)), new Shapes(1, 4), DType.Float32, DType.Float32, adapter);   // declares the adapter's tensors
        var rng = new Random(family.Length);
        var tensors = adapter.Params.Tensors.Select(t => (t.Key, t.Shape,
            Enumerable.Range(0, (int)t.Shape.Aggregate(1L, (a, b) => a * b)).Select(_ => (float)((rng.NextDouble() - 0.5) * 0.6)).ToArray())).ToList();
        SafetensorsWriter.WriteFloats(Path.Combine(dir, AdapterWeights.SafetensorsName), tensors);
        return dir;
    }

    private static Dictionary<string, HostTensor> Feeds(string adapterDir)
    {
        var w = AdapterWeights.Load(adapterDir);
        return w.Keys.ToDictionary(k => k, k => HostTensor.Of(w[k].Data, [.. w[k].Shape]));
    }

    /// <summary>Last-position logits of the forward graph (no cache) with the adapter, over the whole sequence.</summary>
    private static float[] LastLogits(string model, string adapterDir, IReadOnlyList<long> ids, int vocab)
    {
        var logits = Reference.ForwardLogits(model, [.. ids], [.. ids.Select(_ => 1L)], 1, TestLora.Graph(adapterDir), Feeds(adapterDir));
        return logits[((ids.Count - 1) * vocab)..(ids.Count * vocab)];
    }

    /// <summary>The greedy continuation the reference loop picks (ending at a stop id or after <see cref="MaxNew"/>).</summary>
    private static List<int> ReferenceDecode(string model, string adapterDir, SmallTokenizer tok, string prompt, ISet<int> stops, int vocab)
    {
        var ids = tok.Encode(prompt).Select(i => (long)i).ToList();
        var picked = new List<int>();
        while (picked.Count < MaxNew)
        {
            var best = Argmax(LastLogits(model, adapterDir, ids, vocab));
            picked.Add(best);
            if (stops.Contains(best)) break;
            ids.Add(best);
        }
        return picked;
    }

    private static int Argmax(float[] x)
    {
        var best = 0;
        for (var k = 1; k < x.Length; k++) if (x[k] > x[best]) best = k;
        return best;
    }

    private static (int Code, string Out) Run(CommandServices services, params string[] args)
    {
        var (stdout, old) = (new StringWriter(), Console.Out);
        Console.SetOut(stdout);
        try
        {
            return (Commands.Run(args, services), stdout.ToString());
        }
        finally
        {
            Console.SetOut(old);
        }
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void ExportGenerateAndEval(string family, string method)
    {
        var (model, adapter) = (Model(family), Adapter(family, method));
        var cfg = ModelConfig.Load(model);
        var tok = new SmallTokenizer(cfg.VocabSize);
        var services = new CommandServices(_ => tok);
        var exported = Files.TempDir();
        string[] export = ["export", "--model", model, "--adapter", adapter, "--out", exported];
        Assert.AreEqual(0, Run(services, method == "mixlora" ? [.. export, "--router-outputs"] : export).Code, $"{family} {method}: export");

        // generate: a prompt whose greedy continuation is not at once a stop id (else nothing would be compared)
        var stops = cfg.EosTokenIds.Append(SmallTokenizer.Eos).ToHashSet();
        var (prompt, picked) = new[] { "Hi there", "The cat sat", "Once upon a time", "Tell me" }
            .Select(p => (p, ReferenceDecode(model, adapter, tok, p, stops, cfg.VocabSize))).FirstOrDefault(c => !stops.Contains(c.Item2[0]));
        Assert.IsNotNull(prompt, $"{family} {method}: every prompt's first greedy token is a stop id");
        var promptIds = tok.Encode(prompt).Select(i => (long)i).ToList();
        var withAdapter = LastLogits(model, adapter, promptIds, cfg.VocabSize);
        var without = Reference.ForwardLogits(model, [.. promptIds], [.. promptIds.Select(_ => 1L)], 1)[^cfg.VocabSize..];
        Assert.IsGreaterThan(1e-3, Reference.MaxRelAtRealTokens(without, withAdapter, [1L], cfg.VocabSize), $"{family} {method}: the adapter changes the logits");
        var (code, stdout) = Run(services, "generate", "--model", exported, "--prompt", prompt, "--max-new-tokens", MaxNew.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.AreEqual(0, code, stdout);
        var text = tok.Decode(picked.Where(id => !stops.Contains(id)).ToList(), skipSpecialTokens: true);
        Assert.AreEqual(text + Environment.NewLine, stdout, $"{family} {method}: reference ids {string.Join(", ", picked)}");

        AssertEval(family, method, model, adapter, exported, tok, services);
    }

    private static void AssertEval(string family, string method, string model, string adapter, string exported, SmallTokenizer tok, CommandServices services)
    {
        var data = Path.Combine(Files.Samples, "arc-e.jsonl");
        var report = Path.Combine(Files.TempDir(), "eval.json");
        Assert.AreEqual(0, Run(services, "eval", "--model", exported, "--task", "arc-e", "--data", data, "--out", report).Code, $"{family} {method}: eval");
        using var doc = JsonDocument.Parse(File.ReadAllText(report));
        var root = doc.RootElement;
        var items = RecordText.ReadCommonsense(new DataSource(data, TaskType.Known["arc-e"]));
        Assert.AreEqual(items.Count, root.GetProperty("count").GetInt32());
        var accuracy = root.GetProperty("accuracy").GetDouble();
        Assert.IsTrue(accuracy is >= 0 and <= 1, $"{family} {method}: accuracy {accuracy}");
        var predictions = root.GetProperty("predictions").EnumerateArray().ToList();
        var vocab = ModelConfig.Load(model).VocabSize;
        for (var i = 0; i < items.Count; i++)
        {
            var ids = tok.Encode(items[i].Prompt).Select(x => (long)x).ToList();
            var last = LastLogits(model, adapter, ids, vocab);
            var scores = items[i].AnswerLabels.Select(l => last[tok.Encode(" " + l, addSpecialTokens: false)[^1]]).ToList();
            Assert.AreEqual(items[i].AnswerLabels[scores.IndexOf(scores.Max())], predictions[i].GetProperty("predicted").GetString(), $"{family} {method}: item {i}");
        }
        Assert.AreEqual(predictions.Count(p => p.GetProperty("answer").GetString() == p.GetProperty("predicted").GetString()) / (double)items.Count, accuracy, 1e-12);

        var hasLoad = root.TryGetProperty("expert_load", out var load) && load.ValueKind != JsonValueKind.Null;
        Assert.AreEqual(method == "mixlora", hasLoad, $"{family} {method}: expert load reported for MixLoRA only");
        if (!hasLoad) return;
        var layers = load.EnumerateArray().Select(l => l.EnumerateArray().Select(x => x.GetDouble()).ToArray()).ToArray();
        Assert.HasCount(ModelConfig.Load(model).NumLayers, layers);
        foreach (var layer in layers)
        {
            Assert.HasCount(4, layer);
            Assert.AreEqual(1.0, layer.Sum(), 1e-9, $"{family}: expert load per layer");
        }
    }
}
