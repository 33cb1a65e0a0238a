using System.Collections.Immutable;
using System.Text.Json;
using MixLoRA.GraphBuilder.IO;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>Parsing adapter_config.json: each method's keys, defaults (MoE-PEFT's) and checks (docs/methods.md).</summary>
public sealed partial record AdapterConfig
{
    /// <summary>Router keys that belong to one method or strategy only, for the "does not apply" errors.</summary>
    private static readonly string[] RouterKeys =
        ["routing_strategy", "num_experts", "top_k", "top_p", "temperature", "expert_lora", "act_fn", "jitter_noise", "router_aux_loss_coef", "router_loss"];

    private static readonly string[] SwitchKeys = ["expert_capacity", "router_z_loss_coef", "sparse_step", "ffn_dropout"];

    public static AdapterConfig Parse(JsonFields f)
    {
        var peft = f.Str("peft_type");
        if (!KnownPeftTypes.Contains(peft))
            throw f.Error("peft_type", $"unsupported peft_type '{peft}'", $"use one of {string.Join(", ", KnownPeftTypes)}");
        var targets = ReadTargets(f);
        var cfg = new AdapterConfig
        {
            PeftType = peft,
            Lora = LoraSettings.Read(f, null),
            TargetModules = targets,
            BaseModel = f.StrOpt("base_model_name_or_path"),
            TaskType = f.StrOpt("task_type") ?? "CAUSAL_LM",
        };
        switch (peft)
        {
            case "LORA":
                foreach (var k in new[] { "routing_strategy", "num_experts", "top_k", "top_p", "expert_lora" })
                    if (f.Has(k)) throw f.Error(k, "only applies to peft_type MIXLORA", "remove it or set peft_type to MIXLORA");
                return cfg;
            case "MIXLORA":
                return ReadMixLora(f, cfg);
            default:
                return ReadRoutedLinear(f, cfg);
        }
    }

    private static AdapterConfig ReadMixLora(JsonFields f, AdapterConfig cfg)
    {
        var strategy = f.Str("routing_strategy");
        if (!KnownStrategies.Contains(strategy))
            throw f.Error("routing_strategy", $"unsupported routing strategy '{strategy}'", "use mixlora (top-k), mixlora-dynamic (top-p) or mixlora-switch (top-1 with capacity)");
        if (!cfg.TargetModules.Any(FfnTargets.Contains))
            throw f.Error("target_modules", "MIXLORA needs at least one FFN projection for its experts", "add gate_proj, up_proj and/or down_proj (Phi-3: gate_up_proj and/or down_proj)");
        var experts = f.Int("num_experts");
        if (experts < 1) throw f.Error("num_experts", $"must be at least 1, got {experts}", "use e.g. 8");
        var (dynamic, sw) = (strategy == "mixlora-dynamic", strategy == "mixlora-switch");
        if (dynamic && f.Has("top_k")) throw f.Error("top_k", "does not apply to mixlora-dynamic (it uses top_p)", "remove top_k or use routing_strategy mixlora");
        if (sw && f.Has("top_k")) throw f.Error("top_k", "does not apply to mixlora-switch (it routes each token to one expert)", "remove top_k or use routing_strategy mixlora");
        if (!dynamic && (f.Has("top_p") || f.Has("temperature")))
            throw f.Error(f.Has("top_p") ? "top_p" : "temperature", "only applies to mixlora-dynamic", "remove it or use routing_strategy mixlora-dynamic");
        var topK = dynamic ? 0 : sw ? 1 : f.IntOpt("top_k") ?? 2;
        if (!dynamic && (topK < 1 || topK > experts))
            throw f.Error("top_k", $"must be in [1, num_experts = {experts}], got {topK}", "choose top_k ≤ num_experts");
        var topP = dynamic ? f.DoubleOpt("top_p") ?? 0.8 : 0;
        if (dynamic && !(topP > 0 && topP <= 1)) throw f.Error("top_p", $"must be in (0, 1], got {topP}", "use e.g. 0.8");
        var temperature = dynamic ? f.DoubleOpt("temperature") ?? 0.0 : 0;
        if (!(temperature >= 0)) throw f.Error("temperature", $"must be ≥ 0, got {temperature}", "use 0 for none");
        var act = f.StrOpt("act_fn");
        if (act != null && !KnownActivations.Contains(act))
            throw f.Error("act_fn", $"unknown activation '{act}'", $"use one of {string.Join(", ", KnownActivations)} or omit it for the model's hidden_act");
        cfg = cfg with
        {
            RoutingStrategy = strategy,
            NumExperts = experts,
            TopK = topK,
            TopP = topP,
            Temperature = temperature,
            ActFn = act,
            RouterAuxLossCoef = NonNegative(f, "router_aux_loss_coef", 0.001),
            RouterInitRange = NonNegative(f, "router_init_range", sw ? 1.0 : 0.02),
            JitterNoise = NonNegative(f, "jitter_noise", sw ? 0.01 : 0.0),
            RouterLoss = f.Bool("router_loss", true),
            ExpertLora = f.ObjectOpt("expert_lora") is { } e ? LoraSettings.Read(e, cfg.Lora) : null,
        };
        return sw ? ReadSwitch(f, cfg) : cfg;
    }

    /// <summary>mixlora-switch's keys with MoE-PEFT's defaults: expert_capacity 32, router_z_loss_coef 0.001, sparse_step none, ffn_dropout 0.</summary>
    private static AdapterConfig ReadSwitch(JsonFields f, AdapterConfig cfg)
    {
        var capacity = f.IntOpt("expert_capacity") ?? 32;
        if (capacity < 1) throw f.Error("expert_capacity", $"must be at least 1, got {capacity}", "use e.g. 32 (sequence length / num_experts × a capacity factor of 1–2)");
        var sparse = f.IntOpt("sparse_step");
        if (sparse is < 1) throw f.Error("sparse_step", $"must be at least 1 when given, got {sparse}", "remove it (MoE-PEFT reads it but never uses it)");
        var dropout = NonNegative(f, "ffn_dropout", 0.0);
        if (dropout >= 1) throw f.Error("ffn_dropout", $"must be in [0, 1), got {dropout}", "use 0 (the default) or e.g. 0.1");
        return cfg with { ExpertCapacity = capacity, RouterZLossCoef = NonNegative(f, "router_z_loss_coef", 0.001), SparseStep = sparse, FfnDropout = dropout };
    }

    /// <summary>
    /// LORAMOE (dense softmax over E LoRA experts on each targeted MLP projection; no router loss in MoE-PEFT), MOLA
    /// (top-k over E LoRA experts on every target; MoE-PEFT's router_loss default false) and HYDRALORA (one A, E B heads
    /// mixed by a dense softmax router on every target). The routers start as kaiming_uniform(a = √router_init_range), 5.0.
    /// </summary>
    private static AdapterConfig ReadRoutedLinear(JsonFields f, AdapterConfig cfg)
    {
        var (peft, mola) = (cfg.PeftType, cfg.PeftType == "MOLA");
        var strategy = peft.ToLowerInvariant();
        var own = mola ? new[] { "routing_strategy", "num_experts", "top_k", "router_aux_loss_coef", "router_loss" } : ["routing_strategy", "num_experts"];
        foreach (var k in RouterKeys.Concat(SwitchKeys).Where(k => !own.Contains(k) && f.Has(k)))
            throw f.Error(k, $"does not apply to peft_type {peft}", "remove it (docs/methods.md lists each method's keys)");
        if (f.StrOpt("routing_strategy") is { } rs && rs != strategy)
            throw f.Error("routing_strategy", $"'{rs}' does not go with peft_type {peft}", $"use \"{strategy}\" or leave it out");
        if (cfg.UseDora) throw f.Error("use_dora", $"DoRA is not supported with peft_type {peft} (MoE-PEFT's routed expert LoRAs ignore it)", "set use_dora false");
        if (peft == "LORAMOE" && !cfg.TargetModules.Any(FfnTargets.Contains))
            throw f.Error("target_modules", "LORAMOE puts its experts on the MLP's projections and none is targeted", "add gate_proj, up_proj and/or down_proj");
        var (experts, groups) = ReadExperts(f, mola);
        var topK = mola ? f.IntOpt("top_k") ?? 2 : 0;
        var fewest = groups.IsEmpty ? experts : groups.Min();
        if (mola && (topK < 1 || topK > fewest))
            throw f.Error("top_k", $"must be in [1, num_experts = {fewest}], got {topK}", $"choose top_k ≤ {fewest}");
        return cfg with
        {
            RoutingStrategy = strategy,
            NumExperts = experts,
            ExpertsPerGroup = groups,
            TopK = topK,
            RouterInitRange = NonNegative(f, "router_init_range", 5.0),
            RouterAuxLossCoef = mola ? NonNegative(f, "router_aux_loss_coef", 0.001) : 0,
            RouterLoss = mola && f.Bool("router_loss", false),
        };
    }

    /// <summary>num_experts: an int ≥ 1; for MOLA also a list of them (one per equal group of layers). A list gives NumExperts = its largest entry.</summary>
    private static (int Experts, ImmutableArray<int> Groups) ReadExperts(JsonFields f, bool listAllowed)
    {
        var v = f.Required("num_experts");
        if (v.ValueKind == JsonValueKind.Array && listAllowed)
        {
            var list = v.EnumerateArray().Select(e => f.AsInt("num_experts", e)).ToImmutableArray();
            if (list.IsEmpty || list.Any(n => n < 1))
                throw f.Error("num_experts", $"a list needs entries ≥ 1, got {Fail.Show(list)}", "write e.g. [8, 6, 4, 2] (one per equal group of layers) or one number");
            return (list.Max(), list);
        }
        if (v.ValueKind == JsonValueKind.Array)
            throw f.Error("num_experts", "a per-layer list is only read for peft_type MOLA", "give one number, e.g. 8");
        var n = f.AsInt("num_experts", v);
        return n >= 1 ? (n, []) : throw f.Error("num_experts", $"must be at least 1, got {n}", "use e.g. 8");
    }

    private static double NonNegative(JsonFields f, string key, double dflt)
    {
        var v = f.DoubleOpt(key) ?? dflt;
        return v >= 0 ? v : throw f.Error(key, $"must be ≥ 0, got {v}", $"use e.g. {dflt}");
    }
}
