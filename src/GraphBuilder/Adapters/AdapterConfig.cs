using System.Collections.Immutable;
using MixLoRA.GraphBuilder.IO;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>
/// Rank, scale, dropout and variant of one family of LoRA pairs (the adapter's own, or the
/// experts' when <c>expert_lora</c> overrides them).
/// </summary>
public sealed record LoraSettings(int R, double LoraAlpha, double LoraDropout, bool UseRsLora, bool UseDora, string LoraInit)
{
    public static readonly string[] KnownInits = ["original", "gaussian"];

    /// <summary>The LoRA scale s: α/r, or α/√r with rsLoRA.</summary>
    public double Scaling => UseRsLora ? LoraAlpha / Math.Sqrt(R) : LoraAlpha / R;

    internal static LoraSettings Read(JsonFields f, LoraSettings? inherit)
    {
        var r = inherit is null ? f.Int("r") : f.IntOpt("r") ?? inherit.R;
        if (r < 1) throw f.Error("r", $"rank must be at least 1, got {r}", "set r to a positive integer, e.g. 8");
        var alpha = inherit is null ? f.Double("lora_alpha") : f.DoubleOpt("lora_alpha") ?? inherit.LoraAlpha;
        if (!(alpha > 0)) throw f.Error("lora_alpha", $"must be positive, got {alpha}", "set lora_alpha, e.g. 2·r");
        var dropout = inherit is null ? f.Double("lora_dropout") : f.DoubleOpt("lora_dropout") ?? inherit.LoraDropout;
        if (!(dropout >= 0 && dropout < 1)) throw f.Error("lora_dropout", $"must be in [0, 1), got {dropout}", "use e.g. 0.05");
        var init = f.StrOpt("lora_init") ?? inherit?.LoraInit ?? "original";
        if (!KnownInits.Contains(init)) throw f.Error("lora_init", $"unknown init '{init}'", "use original or gaussian");
        return new LoraSettings(r, alpha, dropout,
            f.BoolOpt("use_rslora") ?? inherit?.UseRsLora ?? false,
            f.BoolOpt("use_dora") ?? inherit?.UseDora ?? false,
            init);
    }
}

/// <summary>
/// An adapter's <c>adapter_config.json</c> in the reference (MixLoRA package) format:
/// <c>peft_type</c> LORA or MIXLORA, the LoRA settings, the target projections and, for MIXLORA,
/// the router (strategy, experts, top-k or top-p, aux loss) and optional <c>expert_lora</c> overrides.
/// </summary>
public sealed partial record AdapterConfig
{
    public const string FileName = "adapter_config.json";

    /// <summary>The projections a LLaMA-family adapter can target, in canonical order (Phi-3's fused qkv_proj and gate_up_proj last).</summary>
    public static readonly ImmutableArray<string> KnownTargets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "qkv_proj", "gate_up_proj"];

    /// <summary>The projections of the models with separate q/k/v and gate/up weights (all but Phi-3).</summary>
    public static readonly ImmutableArray<string> LlamaTargets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    /// <summary>Phi-3's projections.</summary>
    public static readonly ImmutableArray<string> FusedTargets = ["o_proj", "down_proj", "qkv_proj", "gate_up_proj"];

    public static readonly ImmutableArray<string> FfnTargets = ["gate_proj", "up_proj", "down_proj", "gate_up_proj"];

    public static readonly string[] KnownStrategies = ["mixlora", "mixlora-dynamic"];

    public static readonly string[] KnownActivations = ["silu", "swish", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu"];

    public required string PeftType { get; init; }
    public required LoraSettings Lora { get; init; }

    /// <summary>Targeted projections, in the canonical order of <see cref="KnownTargets"/>.</summary>
    public required ImmutableArray<string> TargetModules { get; init; }
    public string? BaseModel { get; init; }
    public string TaskType { get; init; } = "CAUSAL_LM";

    public int R => Lora.R;
    public double LoraAlpha => Lora.LoraAlpha;
    public double LoraDropout => Lora.LoraDropout;
    public bool UseRsLora => Lora.UseRsLora;
    public bool UseDora => Lora.UseDora;
    public string LoraInit => Lora.LoraInit;

    /// <summary>The LoRA scale of the adapter's own (attention and plain) LoRA pairs.</summary>
    public double Scaling => Lora.Scaling;

    public bool IsMixLora => PeftType == "MIXLORA";

    // ---- MIXLORA only ----
    public string? RoutingStrategy { get; init; }
    public int NumExperts { get; init; }
    public int TopK { get; init; }
    public double TopP { get; init; }
    public double Temperature { get; init; }

    /// <summary>Expert activation; null means the model's hidden_act (see <see cref="ActivationFor"/>).</summary>
    public string? ActFn { get; init; }
    public double RouterAuxLossCoef { get; init; } = 0.001;
    public double RouterInitRange { get; init; } = 0.02;
    public double JitterNoise { get; init; }
    public bool RouterLoss { get; init; } = true;

    /// <summary>Settings of the expert LoRA pairs when <c>expert_lora</c> overrides them, else null.</summary>
    public LoraSettings? ExpertLora { get; init; }

    /// <summary>LoRA settings the experts use (the overrides, or the adapter's own).</summary>
    public LoraSettings Experts => ExpertLora ?? Lora;

    public bool Targets(string projection) => TargetModules.Contains(projection);

    public string ActivationFor(string modelHiddenAct) => ActFn ?? modelHiddenAct;

    /// <summary>The keys this project reads, and PEFT's and the authors' own keys that carry nothing for the graphs.</summary>
    private static readonly HashSet<string> KnownKeys =
    [
        "peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "target_modules", "base_model_name_or_path", "use_rslora", "use_dora",
        "lora_init", "act_fn", "routing_strategy", "num_experts", "top_k", "top_p", "temperature", "expert_lora", "router_aux_loss_coef",
        "router_init_range", "router_loss", "jitter_noise",
        // written by PEFT / the authors' tools, with defaults the graphs match or nothing to compute
        "auto_mapping", "revision", "inference_mode", "fan_in_fan_out", "bias", "modules_to_save", "init_lora_weights", "layers_to_transform",
        "layers_pattern", "rank_pattern", "alpha_pattern", "megatron_config", "megatron_core", "loftq_config", "layer_replication",
        "runtime_config", "eva_config", "exclude_modules", "lora_bias", "use_qalora", "qalora_group_size", "trainable_token_indices",
        "target_parameters", "corda_config", "ensure_weight_tying", "arrow_config", "alora_invocation_tokens", "peft_version", "dtype",
        "lora_r", "router_z_loss_coef", "expert_capacity", "sparse_step",
    ];

    /// <summary>
    /// Keys of <paramref name="pathOrDir"/>'s adapter_config.json that nothing reads and that ask for something (a
    /// value other than null, false or empty), for a warning: a typo would pass silently otherwise. PEFT adds new
    /// keys every release, all null or false unless used.
    /// </summary>
    public static IReadOnlyList<string> UnknownKeys(string pathOrDir)
    {
        var file = Directory.Exists(pathOrDir) ? Path.Combine(pathOrDir, FileName) : pathOrDir;
        if (!File.Exists(file)) return [];
        var f = JsonFields.Load(file);
        static bool Inert(System.Text.Json.JsonElement v) => v.ValueKind is System.Text.Json.JsonValueKind.Null or System.Text.Json.JsonValueKind.False
            || (v.ValueKind == System.Text.Json.JsonValueKind.Array && v.GetArrayLength() == 0)
            || (v.ValueKind == System.Text.Json.JsonValueKind.Object && !v.EnumerateObject().Any());
        return [.. f.Keys.Where(k => !KnownKeys.Contains(k) && f.Get(k) is { } v && !Inert(v)).Order(StringComparer.Ordinal)];
    }

    /// <summary>Reads adapter_config.json from a file path or an adapter folder.</summary>
    public static AdapterConfig Load(string pathOrDir)
    {
        var file = Directory.Exists(pathOrDir) ? Path.Combine(pathOrDir, FileName) : pathOrDir;
        if (!File.Exists(file)) throw Fail.User($"adapter config not found: {file}", $"pass an adapter folder holding {FileName}");
        return Parse(JsonFields.Load(file));
    }

    public static AdapterConfig Parse(JsonFields f)
    {
        var peft = f.Str("peft_type");
        if (peft is not ("MIXLORA" or "LORA"))
            throw f.Error("peft_type", $"unsupported peft_type '{peft}'", "use MIXLORA or LORA");
        var targets = ReadTargets(f);
        var cfg = new AdapterConfig
        {
            PeftType = peft,
            Lora = LoraSettings.Read(f, null),
            TargetModules = targets,
            BaseModel = f.StrOpt("base_model_name_or_path"),
            TaskType = f.StrOpt("task_type") ?? "CAUSAL_LM",
        };
        if (peft == "LORA")
        {
            foreach (var k in new[] { "routing_strategy", "num_experts", "top_k", "top_p", "expert_lora" })
                if (f.Has(k)) throw f.Error(k, "only applies to peft_type MIXLORA", "remove it or set peft_type to MIXLORA");
            return cfg;
        }
        return ReadMixLora(f, cfg);
    }

    private static AdapterConfig ReadMixLora(JsonFields f, AdapterConfig cfg)
    {
        var strategy = f.Str("routing_strategy");
        if (!KnownStrategies.Contains(strategy))
            throw f.Error("routing_strategy", $"unsupported routing strategy '{strategy}'", "use mixlora (top-k) or mixlora-dynamic (top-p)");
        if (!cfg.TargetModules.Any(FfnTargets.Contains))
            throw f.Error("target_modules", "MIXLORA needs at least one FFN projection for its experts", "add gate_proj, up_proj and/or down_proj (Phi-3: gate_up_proj and/or down_proj)");
        var experts = f.Int("num_experts");
        if (experts < 1) throw f.Error("num_experts", $"must be at least 1, got {experts}", "use e.g. 8");
        var dynamic = strategy == "mixlora-dynamic";
        if (dynamic && f.Has("top_k")) throw f.Error("top_k", "does not apply to mixlora-dynamic (it uses top_p)", "remove top_k or use routing_strategy mixlora");
        if (!dynamic && (f.Has("top_p") || f.Has("temperature")))
            throw f.Error(f.Has("top_p") ? "top_p" : "temperature", "only applies to mixlora-dynamic", "remove it or use routing_strategy mixlora-dynamic");
        var topK = dynamic ? 0 : f.IntOpt("top_k") ?? 2;
        if (!dynamic && (topK < 1 || topK > experts))
            throw f.Error("top_k", $"must be in [1, num_experts = {experts}], got {topK}", "choose top_k ≤ num_experts");
        var topP = dynamic ? f.DoubleOpt("top_p") ?? 0.8 : 0;
        if (dynamic && !(topP > 0 && topP <= 1)) throw f.Error("top_p", $"must be in (0, 1], got {topP}", "use e.g. 0.8");
        var temperature = dynamic ? f.DoubleOpt("temperature") ?? 0.0 : 0;
        if (!(temperature >= 0)) throw f.Error("temperature", $"must be ≥ 0, got {temperature}", "use 0 for none");
        var act = f.StrOpt("act_fn");
        if (act != null && !KnownActivations.Contains(act))
            throw f.Error("act_fn", $"unknown activation '{act}'", $"use one of {string.Join(", ", KnownActivations)} or omit it for the model's hidden_act");
        return cfg with
        {
            RoutingStrategy = strategy,
            NumExperts = experts,
            TopK = topK,
            TopP = topP,
            Temperature = temperature,
            ActFn = act,
            RouterAuxLossCoef = NonNegative(f, "router_aux_loss_coef", 0.001),
            RouterInitRange = NonNegative(f, "router_init_range", 0.02),
            JitterNoise = NonNegative(f, "jitter_noise", 0.0),
            RouterLoss = f.Bool("router_loss", true),
            ExpertLora = f.ObjectOpt("expert_lora") is { } e ? LoraSettings.Read(e, cfg.Lora) : null,
        };
    }

    private static double NonNegative(JsonFields f, string key, double dflt)
    {
        var v = f.DoubleOpt(key) ?? dflt;
        return v >= 0 ? v : throw f.Error(key, $"must be ≥ 0, got {v}", $"use e.g. {dflt}");
    }

    private static ImmutableArray<string> ReadTargets(JsonFields f)
    {
        var v = f.Required("target_modules");
        var chosen = new HashSet<string>(StringComparer.Ordinal);
        if (v.ValueKind == System.Text.Json.JsonValueKind.Array)
        {
            foreach (var e in v.EnumerateArray()) chosen.Add(f.AsString("target_modules", e));
        }
        else if (v.ValueKind == System.Text.Json.JsonValueKind.Object)
        {
            foreach (var p in v.EnumerateObject())
                if (f.AsBool($"target_modules.{p.Name}", p.Value)) chosen.Add(p.Name);
        }
        else throw f.Error("target_modules", $"expected a list or a name → bool map, got {JsonFields.Kind(v)}", "write e.g. [\"q_proj\", \"v_proj\"]");
        var unknown = chosen.Where(t => !KnownTargets.Contains(t)).Order(StringComparer.Ordinal).ToList();
        if (unknown.Count > 0)
            throw f.Error("target_modules", $"unknown target {Fail.Show(unknown)}", $"use names from {string.Join(", ", KnownTargets)}");
        if (chosen.Count == 0) throw f.Error("target_modules", "no projection is targeted", "list at least one, e.g. q_proj");
        return [.. KnownTargets.Where(chosen.Contains)];
    }
}
