using System.Text.Json.Nodes;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Tests.Fixtures;

namespace MixLoRA.GraphBuilder.Tests.Adapters;

[TestClass]
public sealed class AdapterConfigTests
{
    private static JsonObject MixLora() => new()
    {
        ["peft_type"] = "MIXLORA",
        ["task_type"] = "CAUSAL_LM",
        ["base_model_name_or_path"] = "m",
        ["r"] = 8,
        ["lora_alpha"] = 16,
        ["lora_dropout"] = 0.05,
        ["target_modules"] = new JsonArray("down_proj", "q_proj", "gate_proj", "up_proj", "v_proj"),
        ["routing_strategy"] = "mixlora",
        ["num_experts"] = 8,
    };

    private static string Write(JsonObject cfg)
    {
        var dir = Repo.TempDir("adapter-cfg");
        File.WriteAllText(Path.Combine(dir, AdapterConfig.FileName), cfg.ToJsonString());
        return dir;
    }

    private static AdapterConfig Load(JsonObject cfg) => AdapterConfig.Load(Write(cfg));

    private static string Error(JsonObject cfg, string key)
    {
        var dir = Write(cfg);
        var e = Assert.ThrowsExactly<UserError>(() => AdapterConfig.Load(dir));
        StringAssert.Contains(e.Message, Path.Combine(dir, AdapterConfig.FileName));
        StringAssert.Contains(e.Message, $"'{key}'");
        return e.Message;
    }

    private static JsonObject With(string key, JsonNode? value)
    {
        var c = MixLora();
        c[key] = value;
        return c;
    }

    [TestMethod]
    public void ParityConfigLoadsAndSavesToTheSameText()
    {
        var path = Repo.Parity("llama-basic", "adapter_init", AdapterConfig.FileName);
        var c = AdapterConfig.Load(path);
        Assert.AreEqual(("MIXLORA", 4, 8.0, 0.0), (c.PeftType, c.R, c.LoraAlpha, c.LoraDropout));
        Assert.AreEqual(("mixlora", 4, 2, "silu"), (c.RoutingStrategy, c.NumExperts, c.TopK, c.ActFn));
        Assert.AreEqual((0.01, 0.02, 0.0), (c.RouterAuxLossCoef, c.RouterInitRange, c.JitterNoise));
        CollectionAssert.AreEqual(AdapterConfig.LlamaTargets.ToArray(), c.TargetModules.ToArray());
        Assert.AreEqual(2.0, c.Scaling);
        Assert.AreEqual("model", c.BaseModel);
        Assert.AreEqual(File.ReadAllText(path), c.ToJson());
    }

    [TestMethod]
    public void ReferenceDefaultsApply()
    {
        var c = Load(MixLora());
        Assert.AreEqual((2, 0.001, 0.02, 0.0, true), (c.TopK, c.RouterAuxLossCoef, c.RouterInitRange, c.JitterNoise, c.RouterLoss));
        Assert.IsNull(c.ActFn);
        Assert.AreEqual("gelu", c.ActivationFor("gelu"));
        Assert.AreEqual(("original", false, false), (c.LoraInit, c.UseRsLora, c.UseDora));
        CollectionAssert.AreEqual(new[] { "q_proj", "v_proj", "gate_proj", "up_proj", "down_proj" }, c.TargetModules.ToArray());
        Assert.AreSame(c.Lora, c.Experts);
        Assert.AreEqual(16.0 / 8.0, c.Scaling);
        Assert.AreEqual(16.0 / Math.Sqrt(8), Load(With("use_rslora", true)).Scaling, 1e-15);
    }

    [TestMethod]
    public void TargetModulesMayBeANameToBoolMap()
    {
        var c = Load(With("target_modules", new JsonObject { ["up_proj"] = true, ["k_proj"] = true, ["o_proj"] = false }));
        CollectionAssert.AreEqual(new[] { "k_proj", "up_proj" }, c.TargetModules.ToArray());
        Assert.IsTrue(c.Targets("up_proj"));
        Assert.IsFalse(c.Targets("o_proj"));
    }

    [TestMethod]
    public void DynamicRoutingExpertOverridesAndLoraRoundTrip()
    {
        var d = With("routing_strategy", "mixlora-dynamic");
        d["top_p"] = 0.75;
        d["expert_lora"] = new JsonObject { ["r"] = 16, ["lora_alpha"] = 32 };
        d["lora_init"] = "gaussian";
        d["router_loss"] = false;
        var c = Load(d);
        Assert.AreEqual((0.75, 0.0, 0), (c.TopP, c.Temperature, c.TopK));
        Assert.AreEqual((16, 32.0, 0.05, "gaussian"), (c.Experts.R, c.Experts.LoraAlpha, c.Experts.LoraDropout, c.Experts.LoraInit));
        Assert.AreEqual(8, c.R);
        Assert.AreEqual(0.8, Load(With("routing_strategy", "mixlora-dynamic")).TopP);
        var lora = MixLora();
        foreach (var k in new[] { "routing_strategy", "num_experts" }) lora.Remove(k);
        lora["peft_type"] = "LORA";
        foreach (var cfg in new[] { c, Load(lora), Load(MixLora()) })
        {
            var dir = Repo.TempDir("adapter-rt");
            cfg.Save(dir);
            var back = AdapterConfig.Load(dir);
            Assert.AreEqual(cfg.ToJson(), back.ToJson());
            Assert.AreEqual(cfg.Experts, back.Experts);
            Assert.AreEqual((cfg.TopP, cfg.TopK, cfg.RouterLoss, cfg.PeftType), (back.TopP, back.TopK, back.RouterLoss, back.PeftType));
        }
    }

    [TestMethod]
    public void InvalidOrContradictoryValuesNameTheKey()
    {
        StringAssert.Contains(Error(With("r", 0), "r"), "at least 1");
        StringAssert.Contains(Error(With("top_k", 9), "top_k"), "num_experts = 8");
        Error(With("lora_dropout", 1.0), "lora_dropout");
        StringAssert.Contains(Error(With("routing_strategy", "mixlora-top2"), "routing_strategy"), "mixlora-switch (top-1 with capacity)");
        StringAssert.Contains(Error(With("target_modules", new JsonArray("q_proj", "dense")), "target_modules"), "dense");
        Error(With("target_modules", "q_proj"), "target_modules");
        Error(With("target_modules", new JsonArray("q_proj")), "target_modules");
        Error(With("lora_init", "kaiming"), "lora_init");
        Error(With("act_fn", "swiglu"), "act_fn");
        Error(With("num_experts", 0), "num_experts");
        Error(With("router_aux_loss_coef", -1), "router_aux_loss_coef");
        Error(With("peft_type", "LOHA"), "peft_type");
        Error(With("peft_type", "LORA"), "routing_strategy");
        Error(With("top_p", 0.5), "top_p");
        var dyn = With("routing_strategy", "mixlora-dynamic");
        dyn["top_p"] = 1.5;
        Error(dyn, "top_p");
        dyn["top_p"] = 0.5;
        dyn["top_k"] = 2;
        Error(dyn, "top_k");
        Error(With("expert_lora", new JsonObject { ["r"] = 0 }), "expert_lora.r");
        Error(With("use_dora", "yes"), "use_dora");
        var missing = MixLora();
        missing.Remove("lora_alpha");
        StringAssert.Contains(Error(missing, "lora_alpha"), "missing");
    }

    [TestMethod]
    public void NumbersAreSpelledAsPythonWritesThem()
    {
        // Python: repr(0.0), repr(0.01), repr(1e-05), repr(1.5e-07), repr(100.0), repr(1e16), repr(1e15), repr(0.0001)
        var cases = new (double, string)[]
        {
            (0.0, "0.0"), (0.01, "0.01"), (1e-05, "1e-05"), (1.5e-07, "1.5e-07"), (100.0, "100.0"), (1e16, "1e+16"),
            (1e15, "1000000000000000.0"), (0.0001, "0.0001"),
        };
        foreach (var (v, s) in cases) Assert.AreEqual(s, AdapterConfig.PyFloat(v));
    }
}
