using System.Text.Json;

namespace MixLoRA.Trainer.Tests.Model;

/// <summary>
/// What <see cref="NaiveLlama"/> computes, read straight from a config.json (<see cref="Load"/>) or from a
/// <see cref="TinyModel"/> (<see cref="Of"/>) with the test's own JSON reading and formulas: nothing of the graph
/// code (ModelConfig, RopeScaling) is used, so the reference stays independent.
/// </summary>
internal sealed record NaiveSpec
{
    public required string ModelType { get; init; }
    public required int Hidden { get; init; }
    public required int Layers { get; init; }
    public required int Heads { get; init; }
    public required int KvHeads { get; init; }
    public required int HeadDim { get; init; }
    public required double Eps { get; init; }
    public bool Tied { get; init; }
    public bool QkvBias { get; init; }
    public bool OBias { get; init; }

    /// <summary>Per layer: the sliding window (a query at i sees keys j with i − j &lt; w), or null.</summary>
    public required int?[] Windows { get; init; }

    /// <summary>Per layer: RoPE inverse frequencies over the first <see cref="RotaryDim"/> dimensions of a head.</summary>
    public required double[][] InvFreq { get; init; }

    /// <summary>Rotated dimensions per head (phi3: head_dim · partial_rotary_factor); the rest pass through.</summary>
    public int RotaryDim { get; init; }

    /// <summary>cos and sin are multiplied by this (longrope's attention factor).</summary>
    public double RopeScale { get; init; } = 1;

    /// <summary>Gemma: RMSNorm scales by (1 + w), embeddings × √hidden, post-attention and pre/post-feed-forward norms.</summary>
    public bool Gemma { get; init; }

    /// <summary>qwen3, gemma3_text: RMSNorm over each head of q and k before RoPE.</summary>
    public bool QkNorm { get; init; }

    /// <summary>silu or gelu_tanh (the gate's activation).</summary>
    public string Act { get; init; } = "silu";

    /// <summary>Multiplies q·k: 1/√head_dim, Gemma 1/√query_pre_attn_scalar.</summary>
    public double AttnScale { get; init; }

    /// <summary>Gemma 2: scores → cap · tanh(scores / cap) before the mask; logits likewise with the final cap.</summary>
    public double? AttnSoftcap { get; init; }
    public double? FinalSoftcap { get; init; }

    /// <summary>phi3: qkv_proj = [q; k; v] and gate_up_proj = [gate; up] stacked on the output axis.</summary>
    public bool Fused { get; init; }

    /// <summary>The spec of a config.json (transformers 4 or 5 spelling; rope per layer type too).</summary>
    public static NaiveSpec Load(string configPath)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(configPath));
        var c = doc.RootElement;
        var type = c.GetProperty("model_type").GetString()!;
        var (hidden, heads, layers) = (Int(c, "hidden_size")!.Value, Int(c, "num_attention_heads")!.Value, Int(c, "num_hidden_layers")!.Value);
        var headDim = Int(c, "head_dim") ?? hidden / heads;
        var gemma = type.StartsWith("gemma", StringComparison.Ordinal);
        var rope = c.TryGetProperty("rope_parameters", out var rp) && rp.ValueKind == JsonValueKind.Object ? rp : c.TryGetProperty("rope_scaling", out var rs) && rs.ValueKind == JsonValueKind.Object ? rs : default;
        var partial = Dbl(c, "partial_rotary_factor") ?? (rope.ValueKind == JsonValueKind.Object ? Dbl(rope, "partial_rotary_factor") : null) ?? 1.0;
        var rotary = (int)(headDim * partial);
        var layerTypes = c.TryGetProperty("layer_types", out var lt) && lt.ValueKind == JsonValueKind.Array
            ? lt.EnumerateArray().Select(e => e.GetString()!).ToArray() : Enumerable.Repeat("full_attention", layers).ToArray();
        var window = Int(c, "sliding_window");
        var windowed = type switch
        {
            "mistral" => Enumerable.Repeat(window is not null, layers).ToArray(),
            "qwen2" or "qwen3" => layerTypes.Select((t, l) => Bool(c, "use_sliding_window") && t == "sliding_attention").ToArray(),
            _ => layerTypes.Select(t => t == "sliding_attention").ToArray(),
        };
        var longrope = RopeOf(c, rope, "full_attention") is { ValueKind: JsonValueKind.Object } r0 && Str(r0, "rope_type") == "longrope";
        return new NaiveSpec
        {
            ModelType = type, Hidden = hidden, Layers = layers, Heads = heads, KvHeads = Int(c, "num_key_value_heads") ?? heads, HeadDim = headDim,
            Eps = Dbl(c, "rms_norm_eps")!.Value, Tied = Bool(c, "tie_word_embeddings", gemma),
            QkvBias = type == "qwen2" || Bool(c, "attention_bias"), OBias = type != "qwen2" && Bool(c, "attention_bias"),
            Windows = windowed.Select(w => w ? window : null).ToArray(),
            InvFreq = layerTypes.Select(t => InvFreqOf(c, RopeOf(c, rope, t), rotary)).ToArray(),
            RotaryDim = rotary, RopeScale = longrope ? LongRopeScale(c, rope) : 1,
            Gemma = gemma, QkNorm = type is "qwen3" or "gemma3_text",
            Act = (Str(c, "hidden_activation") ?? Str(c, "hidden_act")) is "gelu_pytorch_tanh" or "gelu_tanh" ? "gelu_tanh" : "silu",
            AttnScale = 1 / Math.Sqrt(gemma ? Dbl(c, "query_pre_attn_scalar") ?? headDim : headDim),
            AttnSoftcap = Dbl(c, "attn_logit_softcapping"), FinalSoftcap = Dbl(c, "final_logit_softcapping"), Fused = type == "phi3",
        };
    }

    /// <summary>The <see cref="TinyModel"/> checkpoints the tests write (llama, mistral, qwen2).</summary>
    public static NaiveSpec Of(TinyModel m) => new()
    {
        ModelType = m.ModelType, Hidden = m.Hidden, Layers = m.Layers, Heads = m.Heads, KvHeads = m.KvHeads, HeadDim = m.HeadDim, Eps = m.Eps,
        Tied = m.Tied, QkvBias = m.QkvBias, OBias = m.OBias, Windows = Enumerable.Range(0, m.Layers).Select(m.WindowOf).ToArray(),
        InvFreq = Enumerable.Repeat(InvFreqOf(m), m.Layers).ToArray(), RotaryDim = m.HeadDim, AttnScale = 1 / Math.Sqrt(m.HeadDim),
    };

    /// <summary>
    /// RoPE inverse frequencies from the formulas: 1 / θ^(2i/d); linear divides by factor; llama3 divides the
    /// low frequencies (wavelength 2π/f &gt; L/low) by factor, keeps the high ones (wavelength &lt; L/high) and
    /// blends the band between with s = (L/wavelength − low) / (high − low): (1 − s)·f/factor + s·f.
    /// </summary>
    public static double[] InvFreqOf(TinyModel m) =>
        [.. Enumerable.Range(0, m.HeadDim / 2).Select(i => Scaled(m.RopeType, 1.0 / Math.Pow(m.Theta, 2.0 * i / m.HeadDim), m.Factor, m.LowFreqFactor, m.HighFreqFactor, m.OriginalMax))];

    private static double Scaled(string type, double f, double factor, double low, double high, double original) => type switch
    {
        "default" => f,
        "linear" => f / factor,
        "llama3" => Llama3(f, factor, low, high, original),
        _ => throw new ArgumentException(type),
    };

    private static double Llama3(double f, double factor, double low, double high, double original)
    {
        var wavelength = 2 * Math.PI / f;
        if (wavelength < original / high) return f;
        if (wavelength > original / low) return f / factor;
        var s = ((original / wavelength) - low) / (high - low);
        return ((1 - s) * f / factor) + (s * f);
    }

    /// <summary>
    /// The rope object for a layer type: rope_parameters per layer type (transformers 5, Gemma 3), else the one
    /// object; theta may sit at the top level (transformers 4's rope_theta).
    /// </summary>
    private static JsonElement RopeOf(JsonElement c, JsonElement rope, string layerType) =>
        rope.ValueKind == JsonValueKind.Object && rope.TryGetProperty(layerType, out var typed) && typed.ValueKind == JsonValueKind.Object ? typed : rope;

    /// <summary>
    /// Inverse frequencies over <paramref name="dim"/> rotated dimensions: default/linear/llama3 as above; longrope
    /// (phi3) 1 / (short_factor[i] · θ^(2i/dim)) for sequences within original_max_position_embeddings.
    /// </summary>
    private static double[] InvFreqOf(JsonElement c, JsonElement rope, int dim)
    {
        var has = rope.ValueKind == JsonValueKind.Object;
        var theta = (has ? Dbl(rope, "rope_theta") : null) ?? Dbl(c, "rope_theta") ?? 10000;
        var type = (has ? Str(rope, "rope_type") ?? Str(rope, "type") : null) ?? "default";
        var f = Enumerable.Range(0, dim / 2).Select(i => 1.0 / Math.Pow(theta, 2.0 * i / dim)).ToArray();
        if (type == "longrope")
        {
            var shortFactor = rope.GetProperty("short_factor").EnumerateArray().Select(e => e.GetDouble()).ToArray();
            return [.. f.Select((x, i) => x / shortFactor[i])];
        }
        if (type == "default") return f;
        var original = Dbl(rope, "original_max_position_embeddings") ?? 0;
        return [.. f.Select(x => Scaled(type, x, Dbl(rope, "factor")!.Value, Dbl(rope, "low_freq_factor") ?? 1, Dbl(rope, "high_freq_factor") ?? 4, original))];
    }

    /// <summary>longrope's attention factor √(1 + ln s / ln L), s = max_position_embeddings / L (1 when s ≤ 1), unless given.</summary>
    private static double LongRopeScale(JsonElement c, JsonElement rope)
    {
        if (Dbl(rope, "attention_factor") is { } given) return given;
        var original = Dbl(c, "original_max_position_embeddings") ?? Dbl(rope, "original_max_position_embeddings")!.Value;
        var s = Dbl(c, "max_position_embeddings")!.Value / original;
        return s <= 1 ? 1 : Math.Sqrt(1 + (Math.Log(s) / Math.Log(original)));
    }

    private static JsonElement? Get(JsonElement o, string key) =>
        o.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static int? Int(JsonElement o, string key) => Get(o, key)?.GetInt32();
    private static double? Dbl(JsonElement o, string key) => Get(o, key)?.GetDouble();
    private static string? Str(JsonElement o, string key) => Get(o, key)?.GetString();
    private static bool Bool(JsonElement o, string key, bool absent = false) => Get(o, key)?.GetBoolean() ?? absent;
}
