using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.Runtime;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.Inference.Export;
using MixLoRA.Inference.Generation;
using MixLoRA.Inference.Tests.Fixtures;

namespace MixLoRA.Inference.Tests.Export;

/// <summary>
/// Every model family's export (KV-cache decoder) against transformers' logits of the fixtures in
/// tests/fixtures/families, and token-by-token cached decoding against one full forward, which exercises the
/// sliding windows (Gemma's window is 4 there), local RoPE, soft-capping and partial rotary through the cache.
/// </summary>
[TestClass]
public sealed class FamilyExportTests
{
    private static string Case(string family) => MixLoRA.Tests.TestRepo.FamilyCase(family);

    [TestMethod]
    [DynamicData(nameof(MixLoRA.Tests.TestRepo.Families), typeof(MixLoRA.Tests.TestRepo))]
    public void ExportMatchesTransformersAndTheCacheMatchesOneForward(string family)
    {
        var model = Path.Combine(Case(family), "model");
        using var expected = new SafetensorsFile(Path.Combine(Case(family), "expected", "logits_base.safetensors"));
        var (ids, mask, want) = (expected.ReadInt64("input_ids"), expected.ReadInt64("attention_mask"), expected.ReadFloat32("logits"));
        var shape = expected.Info("logits").Shape;
        var (n, t, v) = ((int)shape[0], (int)shape[1], (int)shape[2]);

        var res = Exporter.Export(new ExportOptions(model, Files.TempDir()));
        StringAssert.Contains(File.ReadAllText(Path.Combine(res.OutDir, GenAiConfig.FileName)), $"\"type\": \"{ModelConfig.Load(model).ModelType}\"");
        using var m = new ExportedModel(res.OutDir);
        var full = ExportParityTests.FullForward(m, ids, mask, n);
        var err = Reference.MaxRelAtRealTokens(want, full, mask, v);
        Assert.IsLessThanOrEqualTo(1e-4, err, $"{family}: export vs transformers: {err:G3}");

        // rows 0 and 3 are 12 real tokens long: prefill 3, then one token at a time
        var rows = new[] { 0, 3 }.SelectMany(r => ids.Skip(r * t).Take(t)).ToArray();
        Assert.IsTrue(new[] { 0, 3 }.All(r => mask.Skip(r * t).Take(t).All(x => x == 1)), "the fixture's rows 0 and 3 should be unpadded");
        var ones = Enumerable.Repeat(1L, 2 * t).ToArray();
        var whole = ExportParityTests.FullForward(m, rows, ones, 2);
        var stepwise = new float[whole.Length];
        var cache = m.EmptyCache(2);
        for (var start = 0; start < t;)
        {
            var count = start == 0 ? 3 : 1;
            var chunk = Enumerable.Range(0, 2).SelectMany(r => rows.Skip((r * t) + start).Take(count)).ToArray();
            var pos = Enumerable.Range(0, 2).SelectMany(_ => Enumerable.Range(start, count).Select(i => (long)i)).ToArray();
            var step = m.Forward(chunk, pos, Enumerable.Repeat(1L, 2 * (start + count)).ToArray(), 2, cache);
            cache.Dispose();
            cache = step.Cache;
            for (var r = 0; r < 2; r++)
                for (var i = 0; i < count; i++)
                    step.Row(r, i).CopyTo(stepwise.AsSpan(((r * t) + start + i) * v, v));
            start += count;
        }
        cache.Dispose();
        var cached = Reference.MaxRelAtRealTokens(whole, stepwise, ones, v);
        Assert.IsLessThanOrEqualTo(1e-5, cached, $"{family}: cached decoding vs full forward: {cached:G3}");
    }

    [TestMethod]
    [DataRow("qwen3")]
    [DataRow("gemma2")]
    [DataRow("phi3")]
    public void LoraExportMatchesTheForwardGraph(string family)
    {
        // PEFT's trained adapter of the fixture (phi3: LoRA on the fused qkv_proj and gate_up_proj)
        var (model, adapterDir) = (Path.Combine(Case(family), "model"), Path.Combine(Case(family), "adapter_final"));
        using var expected = new SafetensorsFile(Path.Combine(Case(family), "expected", "logits_base.safetensors"));
        var (ids, mask, baseLogits) = (expected.ReadInt64("input_ids"), expected.ReadInt64("attention_mask"), expected.ReadFloat32("logits"));
        var (n, v) = ((int)expected.Info("logits").Shape[0], (int)expected.Info("logits").Shape[2]);

        var res = Exporter.Export(new ExportOptions(model, Files.TempDir()) { AdapterDir = adapterDir });
        using var m = new ExportedModel(res.OutDir);
        var got = ExportParityTests.FullForward(m, ids, mask, n);
        var w = AdapterWeights.Load(adapterDir);
        var feeds = w.Keys.ToDictionary(k => k, k => HostTensor.Of(w[k].Data, [.. w[k].Shape]));
        var want = Reference.ForwardLogits(model, ids, mask, n, TestLora.Graph(adapterDir), feeds);
        var err = Reference.MaxRelAtRealTokens(want, got, mask, v);
        Assert.IsLessThanOrEqualTo(1e-5, err, $"{family}: LoRA export vs forward graph: {err:G3}");
        Assert.IsGreaterThan(1e-3, Reference.MaxRelAtRealTokens(baseLogits, got, mask, v), $"{family}: the adapter should change the logits");
    }
}
