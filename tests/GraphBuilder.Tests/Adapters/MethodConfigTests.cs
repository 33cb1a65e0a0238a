using System.Text.Json;
using System.Text.Json.Nodes;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Tests.Fixtures;

namespace MixLoRA.GraphBuilder.Tests.Adapters;

/// <summary>
/// Issue 22's adapter_config.json keys: MoE-PEFT's defaults for mixlora-switch, LORAMOE and MOLA (and ours for
/// HYDRALORA), a write-read round trip of each, and a one-line error naming the file, key and fix for each bad value.
/// </summary>
[TestClass]
public sealed class MethodConfigTests
{
    private static JsonObject Base(string peft, params (string Key, JsonNode? Value)[] more)
    {
        var c = new JsonObject
        {
            ["peft_type"] = peft, ["r"] = 4, ["lora_alpha"] = 8, ["lora_dropout"] = 0.05,
            ["target_modules"] = new JsonArray("q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"), ["num_experts"] = 4,
        };
        foreach (var (k, v) in more) c[k] = v;
        return c;
    }

    private static JsonObject Switch(params (string, JsonNode?)[] more) => Base("MIXLORA", [("routing_strategy", "mixlora-switch"), .. more]);

    private static AdapterConfig Parse(JsonObject c)
    {
        using var doc = JsonDocument.Parse(c.ToJsonString());
        return AdapterConfig.Parse(new JsonFields("adapter_config.json", doc.RootElement));
    }

    private static string Error(JsonObject c, string key)
    {
        var dir = Repo.TempDir("method-cfg");
        File.WriteAllText(Path.Combine(dir, AdapterConfig.FileName), c.ToJsonString());
        var e = Assert.ThrowsExactly<UserError>(() => AdapterConfig.Load(dir));
        StringAssert.Contains(e.Message, Path.Combine(dir, AdapterConfig.FileName));
        StringAssert.Contains(e.Message, $"'{key}'");
        Assert.IsFalse(e.Message.Contains('\n', StringComparison.Ordinal), "one line");
        return e.Message;
    }

    [TestMethod]
    public void DefaultsAreMoePeftsOnes()
    {
        var sw = Parse(Switch());
        Assert.IsTrue(sw.IsSwitch);
        (int, double, double, double, double, int?, double, int) want = (32, 0.001, 0.01, 1.0, 0.001, null, 0.0, 1);
        Assert.AreEqual(want, (sw.ExpertCapacity, sw.RouterZLossCoef, sw.JitterNoise, sw.RouterInitRange, sw.RouterAuxLossCoef, sw.SparseStep, sw.FfnDropout, sw.TopK));
        var loramoe = Parse(Base("LORAMOE"));
        Assert.AreEqual((5.0, false, "loramoe", "loramoe"), (loramoe.RouterInitRange, loramoe.RouterLoss, loramoe.RoutingStrategy, loramoe.KeyPrefix));
        var mola = Parse(Base("MOLA"));
        Assert.AreEqual((2, 0.001, false, 5.0, "mola"), (mola.TopK, mola.RouterAuxLossCoef, mola.RouterLoss, mola.RouterInitRange, mola.KeyPrefix));
        var hydra = Parse(Base("HYDRALORA"));
        Assert.AreEqual((5.0, false, "hydralora"), (hydra.RouterInitRange, hydra.RouterLoss, hydra.KeyPrefix));
        Assert.IsTrue(loramoe.RoutesProjection("down_proj") && !loramoe.RoutesProjection("q_proj"), "LoRAMoE routes the MLP's projections only");
        Assert.IsTrue(mola.RoutesProjection("q_proj") && hydra.RoutesProjection("q_proj") && !mola.RoutesProjection("k_proj"), "MoLA and HydraLoRA route every target");
        Assert.AreEqual(Math.Sqrt(6 / (6.0 * 64)), RoutedLora.RouterBound(5.0, 64), 1e-15, "kaiming_uniform(a=√5) = U(±1/√in)");
    }

    [TestMethod]
    public void EachMethodWritesWhatItReadsBack()
    {
        JsonObject[] configs =
        [
            Switch(("expert_capacity", 8), ("router_z_loss_coef", 0.002), ("sparse_step", 4), ("ffn_dropout", 0.1), ("jitter_noise", 0.0)),
            Base("LORAMOE", ("router_init_range", 2.0)),
            Base("MOLA", ("num_experts", new JsonArray(8, 6, 4, 2)), ("router_loss", true), ("router_aux_loss_coef", 0.01), ("use_rslora", true)),
            Base("HYDRALORA", ("num_experts", 3)),
        ];
        foreach (var c in configs)
        {
            var first = Parse(c);
            var text = first.ToJson();
            using var doc = JsonDocument.Parse(text);
            var again = AdapterConfig.Parse(new JsonFields("(written)", doc.RootElement));
            Assert.AreEqual(text, again.ToJson(), c.ToJsonString());
            Assert.AreEqual(first.PeftType, doc.RootElement.GetProperty("peft_type").GetString());
        }
        var mola = Parse(configs[2]);
        Assert.AreEqual(8, mola.NumExperts, "a list's largest entry");
        CollectionAssert.AreEqual(new[] { 8, 8, 6, 6, 4, 4, 2, 2 }, Enumerable.Range(0, 8).Select(l => mola.ExpertsAt(l, 8)).ToArray(), "groups of 8 / 4 layers");
        CollectionAssert.AreEqual(new[] { 8, 6, 4, 2 }, Enumerable.Range(0, 4).Select(l => mola.ExpertsAt(l, 4)).ToArray());
        var sw = Parse(configs[0]);
        Assert.AreEqual((8, 0.002, 4, 0.1), (sw.ExpertCapacity, sw.RouterZLossCoef, sw.SparseStep ?? 0, sw.FfnDropout));
    }

    [TestMethod]
    [DataRow("switch-top_k", "top_k", "routes each token to one expert")]
    [DataRow("switch-capacity", "expert_capacity", "at least 1")]
    [DataRow("switch-sparse", "sparse_step", "never uses it")]
    [DataRow("switch-ffn-dropout", "ffn_dropout", "[0, 1)")]
    [DataRow("switch-z", "router_z_loss_coef", "≥ 0")]
    [DataRow("loramoe-top_k", "top_k", "does not apply to peft_type LORAMOE")]
    [DataRow("loramoe-attention-only", "target_modules", "none is targeted")]
    [DataRow("loramoe-list", "num_experts", "only read for peft_type MOLA")]
    [DataRow("mola-top_k", "top_k", "[1, num_experts = 2]")]
    [DataRow("mola-zero", "num_experts", "entries ≥ 1")]
    [DataRow("mola-strategy", "routing_strategy", "use \"mola\"")]
    [DataRow("mola-dora", "use_dora", "DoRA is not supported with peft_type MOLA")]
    [DataRow("hydra-jitter", "jitter_noise", "does not apply to peft_type HYDRALORA")]
    [DataRow("hydra-experts", "num_experts", "at least 1")]
    [DataRow("unknown", "peft_type", "MIXLORA, LORAMOE, MOLA, HYDRALORA")]
    public void BadValuesNameTheKeyAndTheFix(string which, string key, string fragment)
    {
        var c = which switch
        {
            "switch-top_k" => Switch(("top_k", 1)),
            "switch-capacity" => Switch(("expert_capacity", 0)),
            "switch-sparse" => Switch(("sparse_step", 0)),
            "switch-ffn-dropout" => Switch(("ffn_dropout", 1.5)),
            "switch-z" => Switch(("router_z_loss_coef", -1)),
            "loramoe-top_k" => Base("LORAMOE", ("top_k", 2)),
            "loramoe-attention-only" => Base("LORAMOE", ("target_modules", new JsonArray("q_proj", "v_proj"))),
            "loramoe-list" => Base("LORAMOE", ("num_experts", new JsonArray(2, 3))),
            "mola-top_k" => Base("MOLA", ("num_experts", new JsonArray(4, 2)), ("top_k", 3)),
            "mola-zero" => Base("MOLA", ("num_experts", new JsonArray(4, 0))),
            "mola-strategy" => Base("MOLA", ("routing_strategy", "mixlora")),
            "mola-dora" => Base("MOLA", ("use_dora", true)),
            "hydra-jitter" => Base("HYDRALORA", ("jitter_noise", 0.1)),
            "hydra-experts" => Base("HYDRALORA", ("num_experts", 0)),
            _ => Base("MOE"),
        };
        StringAssert.Contains(Error(c, key), fragment);
    }

    [TestMethod]
    public void APerGroupListMustSplitTheLayersEvenly()
    {
        var cfg = Parse(Base("MOLA", ("num_experts", new JsonArray(4, 2, 2))));
        var model = ModelConfig.Parse(new JsonFields("(model)", JsonDocument.Parse(new Methods.RefShape().ConfigJson()).RootElement));
        var e = Assert.ThrowsExactly<UserError>(() => TrainGraphs.EvalStep(new TrainSpec(model, cfg, new Shapes(1, 4), DType.Float32, DType.Float32)));
        StringAssert.Contains(e.Message, "'num_experts': a list of 3 entries for a model of 2 layers");
    }
}
