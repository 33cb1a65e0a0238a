using System.Text.Json;
using MixLoRA.Cli;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.Inference.Generation;
using MixLoRA.Inference.Tests.Fixtures;

namespace MixLoRA.Inference.Tests;

[TestClass]
public sealed class CliSmokeTests
{
    [TestMethod]
    public void UnknownCommandIsAUsageError()
    {
        Assert.AreEqual(2, Commands.Run(["no-such-command"]));
    }

    /// <summary>
    /// `export` writes a folder that loads and computes what training computes: model.onnx parses with the project's
    /// reader, its ORT IO matches genai_config.json's names and sizes (the model's config.json values), config.json
    /// reads back as the same model, and the logits of a float32 export with a LoRA adapter equal the training-side
    /// forward graph with that adapter (no KV cache) within 1e-4; float16 stays within float16 rounding of it.
    /// </summary>
    [TestMethod]
    public void ExportWritesTheFolderAndUserMistakesExitWithOne()
    {
        var cfg = ModelConfig.Load(Files.ParityModel);
        var half = Files.TempDir();
        Assert.AreEqual(0, Commands.Run(["export", "--model", Files.ParityModel, "--out", half, "--dtype", "float16"]));
        foreach (var f in new[] { "model.onnx", "model.onnx.data", "genai_config.json", "config.json" }) Assert.IsTrue(File.Exists(Path.Combine(half, f)), f);

        var (adapterDir, feeds) = TestLora.WriteAdapter(cfg, 4, 8, 11, "q_proj", "v_proj");
        var full = Files.TempDir();
        Assert.AreEqual(0, Commands.Run(["export", "--model", Files.ParityModel, "--adapter", adapterDir, "--out", full]));

        foreach (var dir in new[] { half, full })
        {
            var g = OnnxReader.Load(Path.Combine(dir, "model.onnx"));
            Assert.IsNotEmpty(g.Nodes, dir);
            var exported = ModelConfig.Load(dir);
            Assert.AreEqual((cfg.HiddenSize, cfg.NumLayers, cfg.NumHeads, cfg.NumKvHeads, cfg.VocabSize, cfg.MaxPositionEmbeddings),
                (exported.HiddenSize, exported.NumLayers, exported.NumHeads, exported.NumKvHeads, exported.VocabSize, exported.MaxPositionEmbeddings), "config.json");

            using var genai = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "genai_config.json")));
            var model = genai.RootElement.GetProperty("model");
            var decoder = model.GetProperty("decoder");
            Assert.AreEqual("model.onnx", decoder.GetProperty("filename").GetString());
            Assert.AreEqual(cfg.HeadDim, decoder.GetProperty("head_size").GetInt32());
            Assert.AreEqual(cfg.HiddenSize, decoder.GetProperty("hidden_size").GetInt32());
            Assert.AreEqual(cfg.NumHeads, decoder.GetProperty("num_attention_heads").GetInt32());
            Assert.AreEqual(cfg.NumKvHeads, decoder.GetProperty("num_key_value_heads").GetInt32());
            Assert.AreEqual(cfg.NumLayers, decoder.GetProperty("num_hidden_layers").GetInt32());
            Assert.AreEqual(cfg.VocabSize, model.GetProperty("vocab_size").GetInt32());
            Assert.AreEqual(cfg.MaxPositionEmbeddings, model.GetProperty("context_length").GetInt32());
            // every IO name genai_config declares (with %d per layer) is one the model has
            var inputs = g.Inputs.Select(v => v.Name).ToHashSet();
            var outputs = g.Outputs.Select(v => v.Name).ToHashSet();
            string Layer(string template, int l) => template.Replace("%d", l.ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal);
            foreach (var (section, names) in new[] { ("inputs", inputs), ("outputs", outputs) })
                foreach (var p in decoder.GetProperty(section).EnumerateObject())
                    for (var l = 0; l < cfg.NumLayers; l++) Assert.Contains(Layer(p.Value.GetString()!, l), names, $"{section}.{p.Name}");
        }

        // logits: the exported decoder against the training-side forward graph with the same adapter
        using (var expected = new SafetensorsFile(Path.Combine(Files.Parity(), "expected", "logits_base.safetensors")))
        {
            var (ids, mask) = (expected.ReadInt64("input_ids"), expected.ReadInt64("attention_mask"));
            var n = (int)expected.Info("logits").Shape[0];
            var v = cfg.VocabSize;
            var reference = Reference.ForwardLogits(Files.ParityModel, ids, mask, n, TestLora.Graph(adapterDir), feeds);
            Assert.IsGreaterThan(1e-3, Reference.MaxRelAtRealTokens(Reference.ForwardLogits(Files.ParityModel, ids, mask, n), reference, mask, v), "the adapter changes the logits");
            float[] Logits(string dir)
            {
                using var m = new ExportedModel(dir);
                return Export.ExportParityTests.FullForward(m, ids, mask, n);
            }
            var err = Reference.MaxRelAtRealTokens(reference, Logits(full), mask, v);
            Assert.IsLessThanOrEqualTo(1e-4, err, $"float32 export with the adapter vs forward graph: {err:G3}");
            var baseReference = Reference.ForwardLogits(Files.ParityModel, ids, mask, n);
            var errHalf = Reference.MaxRelAtRealTokens(baseReference, Logits(half), mask, v);
            Assert.IsLessThanOrEqualTo(2e-2, errHalf, $"float16 export vs forward graph: {errHalf:G3}");
        }

        Assert.AreEqual(1, Commands.Run(["export", "--model", Path.Combine(half, "nope"), "--out", Files.TempDir()]));
        Assert.AreEqual(1, Commands.Run(["export", "--model", Files.ParityModel, "--out", Files.TempDir(), "--merge-attention-lora"]));
        var mixlora = Path.Combine(Files.Parity(), "expected", "adapter_final");
        Assert.AreEqual(1, Commands.Run(["export", "--model", Files.ParityModel, "--adapter", mixlora, "--out", Files.TempDir(), "--merge-attention-lora", "--onnx-adapter"]));
    }

    /// <summary>
    /// `generate` (greedy, KV cache) prints exactly the decoding of the ids an independent greedy loop picks: the
    /// training-side forward graph over the whole sequence at each step (no cache), argmax of the last position,
    /// stopping at EOS (the config's or the tokenizer's) or after --max-new-tokens.
    /// </summary>
    [TestMethod]
    [DoNotParallelize]
    public void GenerateStreamsFromAnExportedFolder()
    {
        const int MaxNew = 8;
        var outDir = Files.TempDir();
        Assert.AreEqual(0, Commands.Run(["export", "--model", Files.ParityModel, "--out", outDir]));
        var tokenizer = new SmallTokenizer();
        var services = new CommandServices(_ => new SmallTokenizer());
        var stdout = new StringWriter();
        var old = Console.Out;
        Console.SetOut(stdout);
        try
        {
            Assert.AreEqual(0, Commands.Run(["generate", "--model", outDir, "--prompt", "Hi there", "--max-new-tokens", MaxNew.ToString(System.Globalization.CultureInfo.InvariantCulture)], services));
        }
        finally
        {
            Console.SetOut(old);
        }

        var cfg = ModelConfig.Load(Files.ParityModel);
        var stops = cfg.EosTokenIds.Append(SmallTokenizer.Eos).ToHashSet();
        var ids = tokenizer.Encode("Hi there").Select(i => (long)i).ToList();
        var picked = new List<int>();
        var v = cfg.VocabSize;
        while (picked.Count < MaxNew)
        {
            var logits = Reference.ForwardLogits(Files.ParityModel, [.. ids], [.. ids.Select(_ => 1L)], 1);
            var last = logits.AsSpan((ids.Count - 1) * v, v);
            var best = 0;
            for (var k = 1; k < v; k++) if (last[k] > last[best]) best = k;
            picked.Add(best);
            if (stops.Contains(best)) break;
            ids.Add(best);
        }
        var text = tokenizer.Decode(picked.Where(id => !stops.Contains(id)).ToList(), skipSpecialTokens: true);
        Assert.IsNotEmpty(text, $"the reference loop picked only stop ids ({string.Join(", ", picked)}): nothing to compare");
        Assert.AreEqual(text + Environment.NewLine, stdout.ToString(), $"reference ids {string.Join(", ", picked)}");

        Assert.AreEqual(1, Commands.Run(["generate", "--model", outDir, "--prompt", "Hi", "--top-p", "0"], services));
    }
}
