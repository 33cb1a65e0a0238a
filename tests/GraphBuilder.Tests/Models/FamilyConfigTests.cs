using System.Text.Json.Nodes;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Tests.Fixtures;

namespace MixLoRA.GraphBuilder.Tests.Models;

/// <summary>
/// config.json of qwen3, gemma2, gemma3_text and phi3 in both transformers spellings: the family flags, the
/// defaults transformers fills in, and one-line errors naming the key and the file.
/// </summary>
[TestClass]
public sealed class FamilyConfigTests
{
    private static JsonObject Base(string type) => new()
    {
        ["model_type"] = type, ["hidden_size"] = 64, ["intermediate_size"] = 128, ["num_hidden_layers"] = 6,
        ["num_attention_heads"] = 4, ["num_key_value_heads"] = 2, ["vocab_size"] = 256,
    };

    private static string Save(JsonObject cfg)
    {
        var dir = Repo.TempDir("family-cfg");
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        return dir;
    }

    private static ModelConfig Load(JsonObject cfg) => ModelConfig.Load(Save(cfg));

    private static string Error(JsonObject cfg, string key)
    {
        var dir = Save(cfg);
        var e = Assert.ThrowsExactly<UserError>(() => ModelConfig.Load(dir));
        StringAssert.Contains(e.Message, Path.Combine(dir, "config.json"));
        StringAssert.Contains(e.Message, key);
        return e.Message;
    }

    [TestMethod]
    public void Qwen3HasQkNormAndItsOwnHeadDim()
    {
        var c = Base("qwen3");
        c["head_dim"] = 32;
        var m = Load(c);
        Assert.IsTrue(m.QkNorm);
        Assert.AreEqual((32, 32), (m.HeadDim, m.RotaryDim));
        Assert.IsFalse(m.NormPlusOne || m.SandwichNorms || m.ScaleEmbeddings || m.FusedProjections);
        Assert.IsTrue(Enumerable.Range(0, 6).All(l => m.SlidingWindowFor(l) is null));
    }

    [TestMethod]
    public void Gemma2DefaultsAreTransformers()
    {
        var m = Load(Base("gemma2"));
        Assert.IsTrue(m.NormPlusOne && m.SandwichNorms && m.ScaleEmbeddings && m.TieWordEmbeddings);
        Assert.AreEqual((50.0, 30.0, 256.0), (m.AttnLogitSoftcap, m.FinalLogitSoftcap, m.QueryPreAttnScalar));
        Assert.AreEqual("gelu_pytorch_tanh", m.HiddenAct);
        // without layer_types, even layers slide (transformers' Gemma2Config), window 4096
        CollectionAssert.AreEqual(new int?[] { 4096, null, 4096, null, 4096, null }, Enumerable.Range(0, 6).Select(m.SlidingWindowFor).ToArray());
        var c = Base("gemma2");
        c["attn_logit_softcapping"] = null;
        c["hidden_activation"] = "gelu_pytorch_tanh";
        Assert.IsNull(Load(c).AttnLogitSoftcap);
        c["final_logit_softcapping"] = -1.0;
        Error(c, "final_logit_softcapping");
    }

    [TestMethod]
    public void Gemma3LocalLayersTakeTheLocalRopeInBothSpellings()
    {
        // transformers 4: rope_theta for global layers, rope_local_base_freq for local ones, the pattern of 6
        var t4 = Base("gemma3_text");
        t4["rope_theta"] = 1_000_000.0;
        t4["rope_local_base_freq"] = 10_000.0;
        t4["sliding_window"] = 512;
        var a = Load(t4);
        Assert.IsTrue(a.QkNorm && a.NormPlusOne && a.SandwichNorms);
        Assert.IsNull(a.AttnLogitSoftcap);
        CollectionAssert.AreEqual(new int?[] { 512, 512, 512, 512, 512, null }, Enumerable.Range(0, 6).Select(a.SlidingWindowFor).ToArray());
        Assert.AreEqual((10_000.0, 1_000_000.0), (a.RopeFor(0).Theta, a.RopeFor(5).Theta));

        // transformers 5: rope_parameters per layer type, layer_types explicit, linear scaling on global layers
        var t5 = Base("gemma3_text");
        t5["layer_types"] = new JsonArray("sliding_attention", "full_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention");
        t5["rope_parameters"] = new JsonObject
        {
            ["full_attention"] = new JsonObject { ["rope_type"] = "linear", ["factor"] = 8.0, ["rope_theta"] = 1_000_000.0 },
            ["sliding_attention"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 10_000.0 },
        };
        var b = Load(t5);
        Assert.AreEqual(("linear", 8.0, "default"), (b.RopeFor(1).Type, b.RopeFor(1).Factor, b.RopeFor(0).Type));
        Assert.AreEqual(4096, b.SlidingWindowFor(2));
        Assert.IsNull(b.SlidingWindowFor(3));
        ((JsonObject)t5["rope_parameters"]!).Remove("full_attention");
        Error(t5, "full_attention");
    }

    [TestMethod]
    public void Phi3PartialRotaryAndLongRope()
    {
        var c = Base("phi3");
        c["partial_rotary_factor"] = 0.75;
        c["max_position_embeddings"] = 131072;
        c["original_max_position_embeddings"] = 4096;
        c["rope_scaling"] = new JsonObject
        {
            ["type"] = "longrope",
            ["short_factor"] = new JsonArray(1.0, 1.1, 1.2, 1.3, 1.4, 1.5),
            ["long_factor"] = new JsonArray(2.0, 2.1, 2.2, 2.3, 2.4, 2.5),
        };
        var m = Load(c);
        Assert.IsTrue(m.FusedProjections);
        Assert.AreEqual(12, m.RotaryDim);                                                   // 16 × 0.75
        Assert.AreEqual("longrope", m.Rope.Type);
        // transformers: factor = 131072 / 4096 = 32, attention factor √(1 + ln 32 / ln 4096)
        Assert.AreEqual(Math.Sqrt(1 + (Math.Log(32) / Math.Log(4096))), m.Rope.AttentionFactor, 1e-12);
        // short factors divide the default frequencies; long ones too, beyond the original length
        var plain = new RopeScaling("default", 10000).InvFreq(12);
        var shortInv = m.Rope.InvFreq(12);
        var longInv = m.Rope.LongInvFreq(12);
        for (var i = 0; i < 6; i++)
        {
            Assert.AreEqual(plain[i] / (1.0 + (0.1 * i)), shortInv[i], plain[i] * 1e-6);
            Assert.AreEqual(plain[i] / (2.0 + (0.1 * i)), longInv[i], plain[i] * 1e-6);
        }
        ((JsonObject)c["rope_scaling"]!)["short_factor"] = new JsonArray(1.0, 1.0);
        StringAssert.Contains(Error(c, "short_factor"), "give 6 of each");
        c["partial_rotary_factor"] = 1.5;
        Error(c, "partial_rotary_factor");
    }

    [TestMethod]
    public void UnknownRopeTypeNamesTheKey()
    {
        var c = Base("qwen3");
        c["rope_parameters"] = new JsonObject { ["rope_type"] = "yarn", ["rope_theta"] = 10000.0, ["factor"] = 4.0 };
        StringAssert.Contains(Error(c, "rope_parameters.rope_type"), "yarn");
    }
}
