using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.Runtime;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Model;

namespace MixLoRA.Trainer.Tests.Model;

/// <summary>
/// The decoder graph (through <see cref="Scorer"/>, as mixlora-score runs it) on tiny random llama, mistral and
/// qwen2 checkpoints written by the tests, against the independent <see cref="NaiveLlama"/> reference.
/// </summary>
[TestClass]
public sealed class DecoderFamilyTests
{
    private const double Tolerance = 1e-4;
    private static readonly int[] Lengths = [9, 9];

    [TestMethod]
    public void GroupedQueryAttention() => AssertMatchesNaive(new TinyModel { Heads = 4, KvHeads = 2 }, Lengths);

    [TestMethod]
    public void MultiHeadAttention() => AssertMatchesNaive(new TinyModel { Heads = 4, KvHeads = 4 }, Lengths);

    [TestMethod]
    public void HeadDimOtherThanHiddenOverHeads() =>
        AssertMatchesNaive(new TinyModel { Hidden = 32, Heads = 4, KvHeads = 2, HeadDim = 12 }, Lengths);

    [TestMethod]
    public void LlamaAttentionBias() => AssertMatchesNaive(new TinyModel { AttentionBias = true }, Lengths);

    [TestMethod]
    public void Qwen2QkvBias() => AssertMatchesNaive(new TinyModel { ModelType = "qwen2", Heads = 4, KvHeads = 1 }, Lengths);

    [TestMethod]
    public void Qwen2SlidingWindowFromMaxWindowLayers()
    {
        var m = new TinyModel { ModelType = "qwen2", Window = 3, MaxWindowLayers = 1 };
        AssertMatchesNaive(m, [10, 7]);
        AssertChanges(m, m with { Window = null }, [10, 7], "qwen2 sliding window on layer 1");
    }

    [TestMethod]
    public void MistralSlidingWindowShorterThanTheSequence()
    {
        var m = new TinyModel { ModelType = "mistral", Window = 3 };
        AssertMatchesNaive(m, [10, 7]);
        AssertChanges(m, m with { Window = null }, [10, 7], "mistral sliding window");
    }

    [TestMethod]
    public void TiedEmbeddings()
    {
        var m = new TinyModel { Tied = true };
        Assert.IsFalse(m.Weights(1).ContainsKey("lm_head.weight"), "the tied checkpoint has no lm_head.weight");
        AssertMatchesNaive(m, Lengths);
    }

    [TestMethod]
    public void RopeThetaSpellingsGiveTheSameLogits()
    {
        var t5 = new TinyModel { Theta = 500 };
        var t4 = t5 with { Transformers4 = true };
        StringAssert.Contains(t5.ConfigJson(), "rope_parameters");
        StringAssert.Contains(t4.ConfigJson(), "\"rope_theta\": 500");
        var a = AssertMatchesNaive(t5, Lengths);
        var b = AssertMatchesNaive(t4, Lengths);
        CollectionAssert.AreEqual(a, b, "rope_theta at top level and in rope_parameters");
        AssertChanges(t5, t5 with { Theta = 10000 }, Lengths, "rope_theta");
    }

    [TestMethod]
    public void Llama3RopeScaling()
    {
        // head_dim 8, θ 10⁴: wavelengths 2π·{1, 10, 100, 1000}; L = 64, low 1, high 4 → kept, blended, scaled, scaled
        var m = new TinyModel { RopeType = "llama3", Factor = 8, LowFreqFactor = 1, HighFreqFactor = 4, OriginalMax = 64 };
        var inv = NaiveLlama.InvFreq(m);
        Assert.IsTrue(inv[0] == 1 && inv[1] < 0.1 && inv[1] > 0.1 / 8 && Math.Abs(inv[3] - 1e-3 / 8) < 1e-12, "all three llama3 bands are used");
        AssertMatchesNaive(m, [12, 12]);
        AssertMatchesNaive(m with { Transformers4 = true }, [12, 12]);
        AssertChanges(m, m with { RopeType = "default" }, [12, 12], "llama3 rope scaling");
    }

    [TestMethod]
    public void LinearRopeScaling()
    {
        var m = new TinyModel { RopeType = "linear", Factor = 4 };
        AssertMatchesNaive(m, Lengths);
        AssertMatchesNaive(m with { Transformers4 = true }, Lengths);
        AssertChanges(m, m with { RopeType = "default" }, Lengths, "linear rope scaling");
    }

    [TestMethod]
    public void RightPaddedRowsEqualTheUnpaddedRows()
    {
        var m = new TinyModel { ModelType = "mistral", Window = 4, PadTokenId = 5 };
        int[] lengths = [11, 4, 7, 1];
        AssertMatchesNaive(m, lengths);               // naive runs each row alone, unpadded
        using var dir = new TempDir();
        var w = m.Write(dir.Path);
        var rows = Rows(m, lengths);
        var batch = Run(dir.Path, rows);
        Assert.AreEqual(5L, batch.Batch.InputIds[(1 * 11) + 4], "padding uses config.json's pad_token_id");
        for (var r = 0; r < rows.Length; r++)
        {
            var alone = Run(dir.Path, [rows[r]]);
            var err = MaxRelative(alone.Logits, batch.Logits.AsSpan(r * 11 * m.Vocab, rows[r].Length * m.Vocab).ToArray());
            Assert.IsLessThanOrEqualTo(1e-5, err, $"row {r} padded vs alone");
            var padded = NaiveLlama.Forward(m, w, [.. batch.Batch.InputIds.Skip(r * 11).Take(11).Select(x => (int)x)],
                [.. batch.Batch.AttentionMask.Skip(r * 11).Take(11).Select(x => (int)x)]);
            var unpadded = NaiveLlama.Forward(m, w, rows[r], [.. rows[r].Select(_ => 1)]);
            for (var i = 0; i < rows[r].Length; i++)
                for (var k = 0; k < m.Vocab; k++) Assert.AreEqual(unpadded[i][k], padded[i][k], 1e-9, "naive reference: padding is masked");
        }
    }

    /// <summary>Graph logits vs naive at every real position (max |Δ| / max |naive| ≤ 1e-4); returns the graph logits.</summary>
    internal static float[] AssertMatchesNaive(TinyModel m, int[] lengths)
    {
        using var dir = new TempDir();
        var w = m.Write(dir.Path);
        var rows = Rows(m, lengths);
        var r = Run(dir.Path, rows);
        var (t, v) = (r.Batch.T, m.Vocab);
        double err = 0, scale = 0;
        for (var row = 0; row < rows.Length; row++)
        {
            var want = NaiveLlama.Forward(m, w, rows[row], [.. rows[row].Select(_ => 1)]);
            for (var i = 0; i < rows[row].Length; i++)
            {
                for (var k = 0; k < v; k++)
                {
                    scale = Math.Max(scale, Math.Abs(want[i][k]));
                    err = Math.Max(err, Math.Abs(want[i][k] - r.Logits[(((row * t) + i) * v) + k]));
                }
            }
        }
        Assert.IsGreaterThan(0.5, scale, "logits are not trivially small");
        Assert.IsLessThanOrEqualTo(Tolerance, err / scale, $"{m.ModelType}: max |Δlogit| / max |logit| = {err / scale:G3}");
        return r.Logits;
    }

    /// <summary>The setting matters: the two models' logits differ by more than the tolerance.</summary>
    private static void AssertChanges(TinyModel a, TinyModel b, int[] lengths, string what)
    {
        float[] La, Lb;
        using (var da = new TempDir())
        {
            a.Write(da.Path);
            La = Run(da.Path, Rows(a, lengths)).Logits;
        }
        using (var db = new TempDir())
        {
            b.Write(db.Path);
            Lb = Run(db.Path, Rows(b, lengths)).Logits;
        }
        Assert.IsGreaterThan(100 * Tolerance, MaxRelative(La, Lb), $"{what} changes the logits");
    }

    internal static int[][] Rows(TinyModel m, int[] lengths)
    {
        var rng = new Random(11);
        return [.. lengths.Select(n => Enumerable.Range(0, n).Select(_ => rng.Next(3, m.Vocab)).ToArray())];
    }

    internal static ScoreResult Run(string modelDir, int[][] rows)
    {
        var examples = rows.Select((ids, i) => new Example(ids, ids, 0, "tokens", $"row {i}")).ToList();
        return Scorer.Score(modelDir, null, examples, OrtRuntime.Cpu, DType.Float32);
    }

    private static double MaxRelative(float[] want, float[] got) => Compare.MaxRelative(want, got);

    /// <summary>
    /// transformers' MistralConfig and Qwen2Config default sliding_window to 4096 when the key is absent (explicit
    /// null: no window), and Mistral ignores layer_types (it only warns), windowing every layer.
    /// </summary>
    [TestMethod]
    public void SlidingWindowDefaultsAsTransformersDoes()
    {
        static GraphBuilder.Models.ModelConfig Parse(TinyModel m, Action<System.Text.Json.Nodes.JsonObject> edit)
        {
            var c = System.Text.Json.Nodes.JsonNode.Parse(m.ConfigJson())!.AsObject();
            edit(c);
            return GraphBuilder.Models.ModelConfig.Parse(new JsonFields("config.json", System.Text.Json.JsonDocument.Parse(c.ToJsonString()).RootElement));
        }
        var mistral = new TinyModel { ModelType = "mistral", Window = 3 };
        Assert.AreEqual(4096, Parse(mistral, c => c.Remove("sliding_window")).SlidingWindowFor(1), "mistral without the key");
        Assert.IsNull(Parse(mistral, c => c["sliding_window"] = null).SlidingWindowFor(1), "mistral with sliding_window null");
        var typed = Parse(mistral, c => c["layer_types"] = new System.Text.Json.Nodes.JsonArray("full_attention", "full_attention"));
        Assert.AreEqual(3, typed.SlidingWindowFor(0), "mistral ignores layer_types");
        var qwen = new TinyModel { ModelType = "qwen2", Window = 3, MaxWindowLayers = 0 };
        Assert.AreEqual(4096, Parse(qwen, c => c.Remove("sliding_window")).SlidingWindowFor(0), "qwen2 with use_sliding_window and no key");
        Assert.IsNull(Parse(qwen with { Window = null }, c => c.Remove("sliding_window")).SlidingWindowFor(0), "qwen2 without use_sliding_window");
    }

    [TestMethod]
    public void ConfigReadsTheTinyCheckpointAsWritten()
    {
        using var dir = new TempDir();
        var m = new TinyModel { ModelType = "qwen2", Window = 5, MaxWindowLayers = 1, HeadDim = 12, Tied = true };
        m.Write(dir.Path);
        var cfg = GraphBuilder.Models.ModelConfig.Load(dir.Path);
        Assert.AreEqual(12, cfg.HeadDim);
        Assert.IsTrue(cfg.AttentionBias);
        Assert.IsTrue(cfg.TieWordEmbeddings);
        Assert.IsNull(cfg.SlidingWindowFor(0));
        Assert.AreEqual(5, cfg.SlidingWindowFor(1));
        using var st = new SafetensorsFile(Path.Combine(dir.Path, "model.safetensors"));
        Assert.IsFalse(st.Contains("lm_head.weight"));
    }
}

/// <summary>A temporary folder removed on Dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("mixlora-score-").FullName;

    public void Dispose()
    {
        if (Directory.Exists(Path)) Directory.Delete(Path, true);
    }
}
