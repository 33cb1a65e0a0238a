using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.Inference.Export;
using MixLoRA.Inference.Generation;
using MixLoRA.Inference.Tests.Fixtures;

namespace MixLoRA.Inference.Tests.Export;

/// <summary>The exported decoder (ORT, KV-cache IO) against the forward graph and the reference's logits.</summary>
[TestClass]
public sealed class ExportParityTests
{
    private static (long[] Ids, long[] Mask, float[] Logits, int N, int T, int V) BaseCase()
    {
        using var expected = new SafetensorsFile(Path.Combine(Files.Parity(), "expected", "logits_base.safetensors"));
        var shape = expected.Info("logits").Shape;
        return (expected.ReadInt64("input_ids"), expected.ReadInt64("attention_mask"), expected.ReadFloat32("logits"), (int)shape[0], (int)shape[1], (int)shape[2]);
    }

    internal static float[] FullForward(ExportedModel m, long[] ids, long[] mask, int batch)
    {
        var t = ids.Length / batch;
        var positions = Enumerable.Range(0, batch).SelectMany(_ => Enumerable.Range(0, t).Select(i => (long)i)).ToArray();
        using var empty = m.EmptyCache(batch);
        var step = m.Forward(ids, positions, mask, batch, empty);
        step.Cache.Dispose();
        return step.Logits;
    }

    [TestMethod]
    public void BaseExportReproducesForwardGraphAndReferenceLogits()
    {
        var (ids, mask, want, n, _, v) = BaseCase();
        var res = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir()));
        using var m = new ExportedModel(res.OutDir);
        var got = FullForward(m, ids, mask, n);

        var forward = Reference.ForwardLogits(Files.ParityModel, ids, mask, n);
        var errGraph = Reference.MaxRelAtRealTokens(forward, got, mask, v);
        Assert.IsLessThanOrEqualTo(1e-5, errGraph, $"export vs forward graph: {errGraph:G3}");
        var errRef = Reference.MaxRelAtRealTokens(want, got, mask, v);
        Assert.IsLessThanOrEqualTo(1e-4, errRef, $"export vs reference logits_base: {errRef:G3}");
    }

    [TestMethod]
    public void TokenByTokenDecodingWithTheCacheEqualsOneFullForward()
    {
        var (ids, mask, _, n, t, v) = BaseCase();
        // two rows, cut to their common real length (the cache test needs no padding)
        var len = Enumerable.Range(0, 2).Min(r => (int)mask.Skip(r * t).Take(t).Sum());
        Assert.IsGreaterThan(4, len);
        var rows = Enumerable.Range(0, 2).SelectMany(r => ids.Skip(r * t).Take(len)).ToArray();
        var ones = Enumerable.Repeat(1L, 2 * len).ToArray();
        var res = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir()));
        using var m = new ExportedModel(res.OutDir);
        var full = FullForward(m, rows, ones, 2);

        var stepwise = new float[full.Length];
        var cache = m.EmptyCache(2);
        const int prefill = 3;
        for (var start = 0; start < len;)
        {
            var count = start == 0 ? prefill : 1;
            var chunk = Enumerable.Range(0, 2).SelectMany(r => rows.Skip((r * len) + start).Take(count)).ToArray();
            var pos = Enumerable.Range(0, 2).SelectMany(_ => Enumerable.Range(start, count).Select(i => (long)i)).ToArray();
            var step = m.Forward(chunk, pos, Enumerable.Repeat(1L, 2 * (start + count)).ToArray(), 2, cache);
            cache.Dispose();
            cache = step.Cache;
            Assert.AreEqual(start + count, cache.Length);
            for (var r = 0; r < 2; r++)
                for (var i = 0; i < count; i++)
                    step.Row(r, i).CopyTo(stepwise.AsSpan(((r * len) + start + i) * v, v));
            start += count;
        }
        cache.Dispose();
        var err = Reference.MaxRelAtRealTokens(full, stepwise, ones, v);
        Assert.IsLessThanOrEqualTo(1e-5, err, $"cached decoding vs full forward: {err:G3}");
    }

    [TestMethod]
    public void AdapterExportMatchesForwardGraphAndMergingKeepsTheLogits()
    {
        var (ids, mask, _, n, _, v) = BaseCase();
        var cfg = ModelConfig.Load(Files.ParityModel);
        string[] modules = ["q_proj", "v_proj"];
        var (adapterDir, feeds) = TestLora.WriteAdapter(cfg, 4, 8, 7, modules);

        var plain = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir()) { AdapterDir = adapterDir });
        var merged = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir()) { AdapterDir = adapterDir, MergeAttentionLora = true });
        static bool IsLora(string name) => name.Contains(".lora_", StringComparison.Ordinal);
        Assert.IsFalse(merged.Graph.Inputs.Select(x => x.Name).Concat(merged.Graph.Initializers.Select(i => i.Name)).Any(IsLora), "the merged export still holds LoRA tensors");
        Assert.IsFalse(plain.Graph.Inputs.Any(x => IsLora(x.Name)), "without --onnx-adapter the adapter tensors are not inputs");
        Assert.HasCount(4 * cfg.NumLayers, plain.AdapterTensors);

        float[] Run(string dir)
        {
            using var m = new ExportedModel(dir);
            return FullForward(m, ids, mask, n);
        }
        var gotPlain = Run(plain.OutDir);
        var gotMerged = Run(merged.OutDir);
        var forward = Reference.ForwardLogits(Files.ParityModel, ids, mask, n, TestLora.Graph(adapterDir), feeds);
        var baseLogits = Reference.ForwardLogits(Files.ParityModel, ids, mask, n);
        Assert.IsGreaterThan(1e-3, Reference.MaxRelAtRealTokens(baseLogits, forward, mask, v), "the test adapter must change the logits");
        Assert.IsLessThanOrEqualTo(1e-5, Reference.MaxRelAtRealTokens(forward, gotPlain, mask, v), "adapter export vs forward graph");
        Assert.IsLessThanOrEqualTo(1e-5, Reference.MaxRelAtRealTokens(forward, gotMerged, mask, v), "merged export vs forward graph");
    }

    [TestMethod]
    public void MixLoraExportReproducesTheReferenceFinalLogits()
    {
        var dir = Files.Parity();
        using var expected = new SafetensorsFile(Path.Combine(dir, "expected", "logits_final.safetensors"));
        var (ids, mask, want) = (expected.ReadInt64("input_ids"), expected.ReadInt64("attention_mask"), expected.ReadFloat32("logits"));
        var shape = expected.Info("logits").Shape;
        var (n, v) = ((int)shape[0], (int)shape[2]);
        foreach (var merge in new[] { false, true })
        {
            var res = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir())
            {
                AdapterDir = Path.Combine(dir, "expected", "adapter_final"), MergeAttentionLora = merge,
            });
            using var m = new ExportedModel(res.OutDir);
            var got = FullForward(m, ids, mask, n);
            var err = Reference.MaxRelAtRealTokens(want, got, mask, v);
            Assert.IsLessThanOrEqualTo(1e-4, err, $"MixLoRA export (merge {merge}) vs reference logits_final: {err:G3}");
        }
    }

    [TestMethod]
    public void Float16ExportRunsOnCpuCloseToFloat32()
    {
        var (ids, mask, want, n, _, v) = BaseCase();
        var res = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir()) { DType = GraphBuilder.IR.DType.Float16 });
        using var m = new ExportedModel(res.OutDir);
        var got = FullForward(m, ids, mask, n);
        var err = Reference.MaxRelAtRealTokens(want, got, mask, v);
        Assert.IsLessThanOrEqualTo(2e-2, err, $"float16 export vs reference: {err:G3}");
    }
}
