using System.Text.Json.Nodes;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Tests.Fixtures;

namespace MixLoRA.GraphBuilder.Tests.Models;

[TestClass]
public sealed class ConfigTests
{
    private static JsonObject BaseConfig(string type = "llama") => new()
    {
        ["model_type"] = type,
        ["hidden_size"] = 64,
        ["intermediate_size"] = 160,
        ["num_hidden_layers"] = 4,
        ["num_attention_heads"] = 4,
        ["vocab_size"] = 256,
    };

    private static string Save(JsonObject cfg)
    {
        var dir = Repo.TempDir("cfg");
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        return dir;
    }

    private static ModelConfig Load(JsonObject cfg) => ModelConfig.Load(Save(cfg));

    private static string LoadError(JsonObject cfg, string key)
    {
        var dir = Save(cfg);
        var e = Assert.ThrowsExactly<UserError>(() => ModelConfig.Load(dir));
        StringAssert.Contains(e.Message, Path.Combine(dir, "config.json"));
        StringAssert.Contains(e.Message, $"'{key}'");
        return e.Message;
    }

    [TestMethod]
    public void ParityConfigLoads()
    {
        var c = ModelConfig.Load(Repo.Parity("llama-basic", "model"));
        Assert.AreEqual("llama", c.ModelType);
        Assert.AreEqual((64, 160, 2, 4, 2, 16, 256), (c.HiddenSize, c.IntermediateSize, c.NumLayers, c.NumHeads, c.NumKvHeads, c.HeadDim, c.VocabSize));
        Assert.AreEqual(1e-5, c.RmsNormEps);
        Assert.AreEqual("silu", c.HiddenAct);
        Assert.AreEqual(("default", 10000.0), (c.Rope.Type, c.RopeTheta));
        Assert.AreEqual((0, 1), (c.PadTokenId, c.BosTokenId));
        CollectionAssert.AreEqual(new[] { 2 }, c.EosTokenIds.ToArray());
        Assert.IsFalse(c.TieWordEmbeddings || c.AttentionBias || c.OProjBias || c.MlpBias);
        Assert.IsNull(c.SlidingWindowFor(0));
        Assert.AreEqual("float32", c.DType);
    }

    [TestMethod]
    public void DefaultsApplyWhenKeysAreAbsent()
    {
        var c = Load(BaseConfig());
        Assert.AreEqual((4, 16, 1e-6, "silu", 2048), (c.NumKvHeads, c.HeadDim, c.RmsNormEps, c.HiddenAct, c.MaxPositionEmbeddings));
        Assert.AreEqual(10000.0, c.RopeTheta);
        Assert.AreEqual(0, c.EosTokenIds.Length);
        var eos = BaseConfig();
        eos["eos_token_id"] = new JsonArray(128001, 128009);
        CollectionAssert.AreEqual(new[] { 128001, 128009 }, Load(eos).EosTokenIds.ToArray());
    }

    [TestMethod]
    public void BothRopeThetaSpellingsGiveTheSameFrequencies()
    {
        var t4 = BaseConfig();
        t4["rope_theta"] = 500000.0;
        t4["rope_scaling"] = new JsonObject { ["type"] = "linear", ["factor"] = 4.0 };
        var t5 = BaseConfig();
        t5["rope_parameters"] = new JsonObject { ["rope_type"] = "linear", ["rope_theta"] = 500000.0, ["factor"] = 4.0 };
        var a = Load(t4);
        var b = Load(t5);
        Assert.AreEqual(500000.0, a.RopeTheta);
        Assert.AreEqual(500000.0, b.RopeTheta);
        Assert.AreEqual(a.Rope, b.Rope);
        var inv = a.RopeInvFreq();
        Assert.AreEqual(8, inv.Length);
        for (var i = 0; i < 8; i++)
        {
            var expected = 1.0 / Math.Pow(500000.0, 2.0 * i / 16) / 4.0;
            Assert.AreEqual(expected, inv[i], expected * 1e-6, $"i={i}");
        }
    }

    [TestMethod]
    public void Llama3RopeScalingMatchesTheTransformersFormula()
    {
        var cfg = BaseConfig();
        cfg["hidden_size"] = 4096;
        cfg["num_attention_heads"] = 32;
        cfg["rope_scaling"] = new JsonObject
        {
            ["rope_type"] = "llama3", ["factor"] = 8.0, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0,
            ["original_max_position_embeddings"] = 8192,
        };
        cfg["rope_theta"] = 500000.0;
        var inv = Load(cfg).RopeInvFreq();
        Assert.AreEqual(64, inv.Length);
        // independent recomputation in double of transformers' _compute_llama3_parameters
        const double theta = 500000, factor = 8, low = 1, high = 4, oldLen = 8192;
        var bands = new HashSet<string>();
        for (var i = 0; i < 64; i++)
        {
            var f = 1.0 / Math.Pow(theta, 2.0 * i / 128);
            var wavelen = 2 * Math.PI / f;
            double expected;
            if (wavelen < oldLen / high) { expected = f; bands.Add("high"); }
            else if (wavelen > oldLen / low) { expected = f / factor; bands.Add("low"); }
            else
            {
                var s = (oldLen / wavelen - low) / (high - low);
                expected = (1 - s) * f / factor + s * f;
                bands.Add("medium");
            }
            Assert.AreEqual(expected, inv[i], expected * 2e-6, $"i={i}");
        }
        Assert.AreEqual(3, bands.Count, "the case covers all three frequency bands");
    }

    [TestMethod]
    public void FamiliesReadTheirBiasAndWindowKeys()
    {
        var q = BaseConfig("qwen2");
        q["sliding_window"] = 4096;
        q["max_window_layers"] = 2;
        var qc = Load(q);
        Assert.IsTrue(qc.AttentionBias);
        Assert.IsFalse(qc.OProjBias);
        Assert.IsNull(qc.SlidingWindow, "qwen2 ignores sliding_window unless use_sliding_window");
        q["use_sliding_window"] = true;
        qc = Load(q);
        Assert.AreEqual(((int?)null, (int?)4096), (qc.SlidingWindowFor(1), qc.SlidingWindowFor(2)));

        var m = BaseConfig("mistral");
        m["sliding_window"] = 4096;
        var mc = Load(m);
        Assert.AreEqual(4096, mc.SlidingWindowFor(0));
        Assert.IsFalse(mc.AttentionBias);

        var l = BaseConfig();
        l["attention_bias"] = true;
        l["mlp_bias"] = true;
        l["tie_word_embeddings"] = true;
        var lc = Load(l);
        Assert.IsTrue(lc.AttentionBias && lc.OProjBias && lc.MlpBias && lc.TieWordEmbeddings);
    }

    [TestMethod]
    public void ToJsonRoundTripsInBothStyles()
    {
        var cfg = BaseConfig("qwen2");
        cfg["num_key_value_heads"] = 2;
        cfg["use_sliding_window"] = true;
        cfg["sliding_window"] = 128;
        cfg["max_window_layers"] = 1;
        cfg["rope_scaling"] = new JsonObject
        {
            ["rope_type"] = "llama3", ["factor"] = 8.0, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0,
            ["original_max_position_embeddings"] = 64,
        };
        cfg["eos_token_id"] = new JsonArray(1, 2);
        var c = Load(cfg);
        foreach (var t4 in new[] { false, true })
        {
            var dir = Repo.TempDir("cfg-rt");
            c.Save(dir, t4);
            var back = ModelConfig.Load(dir);
            Assert.AreEqual(c.ToJson(), back.ToJson());
            Assert.AreEqual(c.Rope, back.Rope);
            CollectionAssert.AreEqual(c.SlidingLayers.ToArray(), back.SlidingLayers.ToArray());
            StringAssert.Contains(File.ReadAllText(Path.Combine(dir, "config.json")), t4 ? "\"rope_scaling\"" : "\"rope_parameters\"");
        }
    }

    [TestMethod]
    public void ErrorsNameTheKeyAndTheFile()
    {
        var c = BaseConfig("gpt2");
        StringAssert.Contains(LoadError(c, "model_type"), "gpt2");
        StringAssert.Contains(LoadError(BaseConfig("gpt_neox"), "model_type"), "qwen3, gemma2, gemma3_text, phi3");
        c = BaseConfig();
        c.Remove("hidden_size");
        StringAssert.Contains(LoadError(c, "hidden_size"), "missing");
        c = BaseConfig();
        c["hidden_size"] = "64";
        StringAssert.Contains(LoadError(c, "hidden_size"), "expected an integer");
        c = BaseConfig();
        c["num_attention_heads"] = 6;
        StringAssert.Contains(LoadError(c, "num_attention_heads"), "not divisible");
        c["head_dim"] = 16;
        Assert.AreEqual(16, Load(c).HeadDim);
        c = BaseConfig();
        c["num_key_value_heads"] = 3;
        LoadError(c, "num_key_value_heads");
        c = BaseConfig();
        c["rope_parameters"] = new JsonObject { ["rope_type"] = "yarn", ["rope_theta"] = 10000.0 };
        StringAssert.Contains(LoadError(c, "rope_parameters.rope_type"), "yarn");
        c = BaseConfig();
        c["rope_scaling"] = new JsonObject { ["rope_type"] = "llama3", ["factor"] = 8.0 };
        LoadError(c, "rope_scaling.low_freq_factor");
        c = BaseConfig();
        c["tie_word_embeddings"] = 1;
        StringAssert.Contains(LoadError(c, "tie_word_embeddings"), "true or false");
    }

    [TestMethod]
    public void FingerprintSeesConfigAndHeadersButNotWeights()
    {
        var dir = Save(BaseConfig());
        SafetensorsWriter.WriteFloats(Path.Combine(dir, "model.safetensors"), [("w", [2], [1f, 2f])]);
        var f0 = ModelConfig.Fingerprint(dir);
        Assert.AreEqual(f0, ModelConfig.Fingerprint(dir));
        SafetensorsWriter.WriteFloats(Path.Combine(dir, "model.safetensors"), [("w", [2], [5f, 6f])]);
        Assert.AreEqual(f0, ModelConfig.Fingerprint(dir), "same header, different weights: no weight is read");
        SafetensorsWriter.WriteFloats(Path.Combine(dir, "model.safetensors"), [("w", [1, 2], [5f, 6f])]);
        var f1 = ModelConfig.Fingerprint(dir);
        Assert.AreNotEqual(f0, f1);
        var cfg = BaseConfig();
        cfg["rms_norm_eps"] = 1e-5;
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        Assert.AreNotEqual(f1, ModelConfig.Fingerprint(dir));
    }
}
