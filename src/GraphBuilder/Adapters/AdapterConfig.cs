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
/// An adapter's <c>adapter_config.json</c> in the reference (MixLoRA package / MoE-PEFT) format:
/// <c>peft_type</c> LORA, MIXLORA (strategies mixlora, mixlora-dynamic, mixlora-switch), LORAMOE, MOLA or
/// HYDRALORA (ours), the LoRA settings, the target projections and each method's router keys
/// (docs/methods.md). Parsing and its checks: AdapterConfigParse.cs.
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

    public static readonly string[] KnownPeftTypes = ["LORA", "MIXLORA", "LORAMOE", "MOLA", "HYDRALORA"];

    public static readonly string[] KnownStrategies = ["mixlora", "mixlora-dynamic", "mixlora-switch"];

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

    /// <summary>MIXLORA (any routing strategy): the MoE block replaces the MLP.</summary>
    public bool IsMixLora => PeftType == "MIXLORA";

    /// <summary>MIXLORA with Switch-Transformer routing (top-1, expert capacity, z-loss).</summary>
    public bool IsSwitch => IsMixLora && RoutingStrategy == "mixlora-switch";

    /// <summary>LORAMOE, MOLA or HYDRALORA: routed LoRA experts (or B heads) on targeted linears (<see cref="RoutesProjection"/>).</summary>
    public bool IsRoutedLinear => PeftType is "LORAMOE" or "MOLA" or "HYDRALORA";

    /// <summary>The prefix of the adapter's tensor keys, as MoE-PEFT writes them (LORA: PEFT's).</summary>
    public string KeyPrefix => PeftType switch
    {
        "MIXLORA" => "mixlora",
        "LORAMOE" => "loramoe",
        "MOLA" => "mola",
        "HYDRALORA" => "hydralora",
        _ => "base_model.model.model",
    };

    /// <summary>
    /// Whether a targeted projection carries routed experts: LORAMOE on the MLP's projections (attention targets get
    /// plain LoRA, as MoE-PEFT does), MOLA and HYDRALORA on every target.
    /// </summary>
    public bool RoutesProjection(string module) => Targets(module) && PeftType switch
    {
        "LORAMOE" => FfnTargets.Contains(module),
        "MOLA" or "HYDRALORA" => true,
        _ => false,
    };

    // ---- MIXLORA, and the router keys LORAMOE, MOLA and HYDRALORA share ----
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

    // ---- mixlora-switch ----
    public int ExpertCapacity { get; init; }
    public double RouterZLossCoef { get; init; }

    /// <summary>Read and written back; MoE-PEFT parses it and never uses it, and neither do we.</summary>
    public int? SparseStep { get; init; }
    public double FfnDropout { get; init; }

    // ---- MOLA ----

    /// <summary>MoLA's <c>num_experts</c> given as a list (one entry per equal group of layers), else empty.</summary>
    public ImmutableArray<int> ExpertsPerGroup { get; init; } = [];

    /// <summary>Settings of the expert LoRA pairs when <c>expert_lora</c> overrides them, else null.</summary>
    public LoraSettings? ExpertLora { get; init; }

    /// <summary>LoRA settings the experts use (the overrides, or the adapter's own).</summary>
    public LoraSettings Experts => ExpertLora ?? Lora;

    public bool Targets(string projection) => TargetModules.Contains(projection);

    /// <summary>
    /// The experts of a layer: <see cref="NumExperts"/>, or for a MoLA list of G entries over L layers the entry of
    /// layer l's group (l · G / L). <see cref="CheckLayers"/> has checked that G divides L.
    /// </summary>
    public int ExpertsAt(int layer, int numLayers) =>
        ExpertsPerGroup.IsEmpty ? NumExperts : ExpertsPerGroup[(int)((long)layer * ExpertsPerGroup.Length / numLayers)];

    /// <summary>Checks what depends on the model: a per-layer num_experts list must split its layers into equal groups.</summary>
    public void CheckLayers(int numLayers)
    {
        if (ExpertsPerGroup.IsEmpty || numLayers % ExpertsPerGroup.Length == 0) return;
        throw Fail.User($"adapter_config.json: key 'num_experts': a list of {ExpertsPerGroup.Length} entries for a model of {numLayers} layers",
            $"give one entry per layer ({numLayers}) or per equal group of layers (a divisor of {numLayers})");
    }

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
        "lora_r", "router_z_loss_coef", "expert_capacity", "sparse_step", "ffn_dropout",
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
