using System.Collections.Immutable;
using MixLoRA.GraphBuilder.IO;

namespace MixLoRA.GraphBuilder.Models;

/// <summary>
/// The architecture of a LLaMA-family decoder (llama, mistral, qwen2, qwen3, gemma2, gemma3_text, phi3) as read
/// from a HF <c>config.json</c>, with the family's defaults filled in and consistency checked. The family's
/// departures from LLaMA are flags here (q/k norm, Gemma's (1 + w) norms and sandwich norms, soft-capping,
/// fused projections, partial rotary), so the decoder reads them, not the model type.
/// </summary>
public sealed partial record ModelConfig
{
    public static readonly string[] SupportedModelTypes = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3"];

    public static readonly string[] SupportedActivations = ["silu", "swish", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu"];

    public required string ModelType { get; init; }
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    public required int NumKvHeads { get; init; }
    public required int HeadDim { get; init; }
    public required double RmsNormEps { get; init; }
    public required string HiddenAct { get; init; }
    public required int VocabSize { get; init; }
    public bool TieWordEmbeddings { get; init; }

    /// <summary>q/k/v projections have a bias (llama attention_bias; always for qwen2).</summary>
    public bool AttentionBias { get; init; }

    /// <summary>o_proj has a bias (llama attention_bias; never for qwen2 or mistral).</summary>
    public bool OProjBias { get; init; }

    /// <summary>gate/up/down projections have a bias (llama mlp_bias).</summary>
    public bool MlpBias { get; init; }

    /// <summary>Sliding-window width for the layers that use one (see <see cref="SlidingLayers"/>).</summary>
    public int? SlidingWindow { get; init; }

    /// <summary>Per layer: true when that layer attends through the sliding window.</summary>
    public ImmutableArray<bool> SlidingLayers { get; init; } = [];

    public required RopeScaling Rope { get; init; }

    /// <summary>RoPE of the sliding-window layers when it differs from <see cref="Rope"/> (Gemma 3's local base).</summary>
    public RopeScaling? LocalRope { get; init; }

    /// <summary>RMSNorm over each head of q and k before RoPE (qwen3, gemma3_text).</summary>
    public bool QkNorm { get; init; }

    /// <summary>RMSNorm weights apply as (1 + w) (Gemma).</summary>
    public bool NormPlusOne { get; init; }

    /// <summary>Gemma's sandwich norms: attention and MLP outputs normed before their residual adds, and a pre-MLP norm.</summary>
    public bool SandwichNorms { get; init; }

    /// <summary>Embeddings are multiplied by √hidden_size in the compute dtype (Gemma).</summary>
    public bool ScaleEmbeddings { get; init; }

    /// <summary>cap · tanh(s / cap) on the attention scores (Gemma 2's attn_logit_softcapping).</summary>
    public double? AttnLogitSoftcap { get; init; }

    /// <summary>cap · tanh(logits / cap) on the output logits (Gemma 2's final_logit_softcapping).</summary>
    public double? FinalLogitSoftcap { get; init; }

    /// <summary>The attention scale 1/√s, s = query_pre_attn_scalar (Gemma); null: 1/√head_dim.</summary>
    public double? QueryPreAttnScalar { get; init; }

    /// <summary>q, k and v as one qkv_proj and gate/up as one gate_up_proj (Phi-3).</summary>
    public bool FusedProjections { get; init; }

    /// <summary>RoPE rotates the first RotaryDim of each head's dimensions (Phi-3's partial_rotary_factor).</summary>
    public int RotaryDim { get; init; }

    /// <summary>RoPE settings of layer <paramref name="layer"/>.</summary>
    public RopeScaling RopeFor(int layer) => LocalRope is { } local && layer < SlidingLayers.Length && SlidingLayers[layer] ? local : Rope;
    public double RopeTheta => Rope.Theta;
    public required int MaxPositionEmbeddings { get; init; }
    public int? PadTokenId { get; init; }
    public int? BosTokenId { get; init; }
    public ImmutableArray<int> EosTokenIds { get; init; } = [];

    /// <summary>The torch dtype named by the config ("dtype" or "torch_dtype"), if any.</summary>
    public string? DType { get; init; }

    /// <summary>Sliding window of layer <paramref name="layer"/>, or null for full attention.</summary>
    public int? SlidingWindowFor(int layer) =>
        SlidingWindow is { } w && layer < SlidingLayers.Length && SlidingLayers[layer] ? w : null;

    /// <summary>RoPE inverse frequencies [RotaryDim/2] of the full-attention layers, as transformers computes them.</summary>
    public double[] RopeInvFreq() => Rope.InvFreq(RotaryDim);

    /// <summary>Reads <c>config.json</c> of <paramref name="modelDir"/> (or a config.json path).</summary>
    public static ModelConfig Load(string modelDir)
    {
        var file = File.Exists(modelDir) ? modelDir : Path.Combine(modelDir, "config.json");
        if (!File.Exists(file))
            throw Fail.User($"no config.json in {modelDir}", "pass a HF model folder (config.json + *.safetensors)");
        return Parse(JsonFields.Load(file));
    }

    public static ModelConfig Parse(JsonFields c)
    {
        var type = c.Str("model_type");
        if (!SupportedModelTypes.Contains(type))
            throw c.Error("model_type", $"unsupported model type '{type}'", $"use a {string.Join(", ", SupportedModelTypes)} checkpoint");
        int Pos(string key) => c.Int(key) is var v && v > 0 ? v : throw c.Error(key, $"must be positive, got {v}", "fix config.json");
        var hidden = Pos("hidden_size");
        var heads = Pos("num_attention_heads");
        var kv = c.IntOpt("num_key_value_heads") ?? heads;
        if (kv <= 0 || heads % kv != 0)
            throw c.Error("num_key_value_heads", $"{kv} does not divide num_attention_heads {heads}", "fix config.json");
        int headDim;
        if (c.IntOpt("head_dim") is { } hd) headDim = hd > 0 ? hd : throw c.Error("head_dim", $"must be positive, got {hd}", "fix config.json");
        else if (hidden % heads == 0) headDim = hidden / heads;
        else throw c.Error("num_attention_heads", $"hidden_size {hidden} is not divisible by num_attention_heads {heads}", "add head_dim or fix config.json");
        if (headDim % 2 != 0) throw c.Error("head_dim", $"head dimension {headDim} is odd", "RoPE needs an even head dimension");
        var layers = Pos("num_hidden_layers");
        var gemma = type is "gemma2" or "gemma3_text";
        var act = (gemma ? c.StrOpt("hidden_activation") : null) ?? c.StrOpt("hidden_act") ?? (gemma ? "gelu_pytorch_tanh" : "silu");
        if (!SupportedActivations.Contains(act))
            throw c.Error("hidden_act", $"unsupported activation '{act}'", $"use one of {string.Join(", ", SupportedActivations)}");
        var eps = c.DoubleOpt("rms_norm_eps") ?? 1e-6;
        if (!(eps > 0)) throw c.Error("rms_norm_eps", $"must be positive, got {eps}", "fix config.json");
        var (qkvBias, oBias, mlpBias) = Biases(c, type);
        var (window, sliding) = Sliding(c, type, layers);
        var rotary = RotaryDimension(c, headDim);
        var (rope, localRope) = Ropes(c, type, gemma);
        if (rope.Type == "longrope" && (rope.ShortFactor.Length != rotary / 2 || rope.LongFactor.Length != rotary / 2))
        {
            throw c.Error(c.Has("rope_parameters") ? "rope_parameters.short_factor" : "rope_scaling.short_factor",
                $"longrope has {rope.ShortFactor.Length} short and {rope.LongFactor.Length} long factors for {rotary} rotated dimensions",
                $"give {rotary / 2} of each (half the rotated head dimensions)");
        }
        return new ModelConfig
        {
            ModelType = type,
            HiddenSize = hidden,
            IntermediateSize = Pos("intermediate_size"),
            NumLayers = layers,
            NumHeads = heads,
            NumKvHeads = kv,
            HeadDim = headDim,
            RmsNormEps = eps,
            HiddenAct = act,
            VocabSize = Pos("vocab_size"),
            TieWordEmbeddings = c.Bool("tie_word_embeddings", gemma),
            AttentionBias = qkvBias,
            OProjBias = oBias,
            MlpBias = mlpBias,
            SlidingWindow = window,
            SlidingLayers = sliding,
            Rope = rope,
            LocalRope = localRope,
            QkNorm = type is "qwen3" or "gemma3_text",
            NormPlusOne = gemma,
            SandwichNorms = gemma,
            ScaleEmbeddings = gemma,
            AttnLogitSoftcap = type == "gemma2" ? Softcap(c, "attn_logit_softcapping", 50.0) : Softcap(c, "attn_logit_softcapping", null),
            FinalLogitSoftcap = type == "gemma2" ? Softcap(c, "final_logit_softcapping", 30.0) : Softcap(c, "final_logit_softcapping", null),
            QueryPreAttnScalar = gemma ? c.DoubleOpt("query_pre_attn_scalar") ?? 256 : null,
            FusedProjections = type == "phi3",
            RotaryDim = rotary,
            MaxPositionEmbeddings = c.IntOpt("max_position_embeddings") ?? DefaultMaxPositions(type),
            PadTokenId = c.IntOpt("pad_token_id"),
            BosTokenId = c.IntOpt("bos_token_id"),
            EosTokenIds = [.. c.IntOrIntList("eos_token_id")],
            DType = c.StrOpt("dtype") ?? c.StrOpt("torch_dtype"),
        };
    }

    private static int DefaultMaxPositions(string type) => type switch
    {
        "mistral" => 4096 * 32,
        "qwen2" or "qwen3" => 32768,
        "gemma2" => 8192,
        "gemma3_text" => 131072,
        "phi3" => 4096,
        _ => 2048,
    };

    private static double? Softcap(JsonFields c, string key, double? dflt)
    {
        if (c.Keys.Contains(key) && !c.Has(key)) return null;                               // explicit null: no capping
        var v = c.DoubleOpt(key) ?? dflt;
        return v is null or > 0 ? v : throw c.Error(key, $"must be positive or null, got {v}", "fix config.json");
    }

    /// <summary>Rotated dimensions per head: head_dim × partial_rotary_factor (top level or in rope_parameters), even.</summary>
    private static int RotaryDimension(JsonFields c, int headDim)
    {
        var factor = c.DoubleOpt("partial_rotary_factor") ?? c.ObjectOpt("rope_parameters")?.DoubleOpt("partial_rotary_factor") ?? 1.0;
        var dim = (int)(headDim * factor);
        return factor is > 0 and <= 1 && dim % 2 == 0 && dim > 0 ? dim
            : throw c.Error("partial_rotary_factor", $"{factor} gives {dim} rotated dimensions of {headDim}", "use a factor in (0, 1] that leaves an even count");
    }

    /// <summary>
    /// The RoPE of full-attention layers and, for Gemma 3, of sliding ones: transformers 5 writes
    /// rope_parameters per layer type ({"full_attention": {...}, "sliding_attention": {...}}); transformers 4
    /// wrote rope_theta + rope_scaling for the global layers and rope_local_base_freq for the local ones.
    /// </summary>
    private static (RopeScaling Global, RopeScaling? Local) Ropes(JsonFields c, string type, bool gemma)
    {
        var theta = type == "gemma3_text" ? 1_000_000.0 : 10000.0;
        if (c.ObjectOpt("rope_parameters") is { } p && (p.Has("full_attention") || p.Has("sliding_attention")))
        {
            var full = p.ObjectOpt("full_attention") ?? throw p.Error("full_attention", "is missing beside sliding_attention", "give both layer types' RoPE");
            var local = p.ObjectOpt("sliding_attention");
            return (RopeScaling.ReadFrom(full, c, theta), local is null ? null : RopeScaling.ReadFrom(local, c, 10000.0));
        }
        var global = RopeScaling.Read(c, theta);
        if (type != "gemma3_text") return (global, null);
        return (global, new RopeScaling("default", c.DoubleOpt("rope_local_base_freq") ?? 10000.0));
    }

    private static (bool qkv, bool o, bool mlp) Biases(JsonFields c, string type) => type switch
    {
        "llama" => (c.Bool("attention_bias", false), c.Bool("attention_bias", false), c.Bool("mlp_bias", false)),
        "qwen2" => (true, false, false),
        _ => (false, false, false),
    };

    private static (int? window, ImmutableArray<bool> layers) Sliding(JsonFields c, string type, int numLayers)
    {
        // transformers' MistralConfig and Qwen2Config default sliding_window to 4096 when the key is absent
        // (an explicit null means no window)
        int? Window() => c.Keys.Contains("sliding_window") ? c.IntOpt("sliding_window") : 4096;
        int? window = type switch
        {
            "mistral" => Window(),
            "qwen2" or "qwen3" when c.Bool("use_sliding_window", false) => Window(),
            "gemma2" => c.IntOpt("sliding_window") ?? 4096,
            "gemma3_text" => c.IntOpt("sliding_window") ?? 4096,
            "phi3" => c.IntOpt("sliding_window"),
            _ => null,
        };
        if (window is null) return (null, [.. new bool[numLayers]]);
        if (window <= 0) throw c.Error("sliding_window", $"must be positive, got {window}", "fix config.json or set it to null");
        if (type is "mistral" or "phi3") return (window, [.. Enumerable.Repeat(true, numLayers)]);   // every layer (Mistral ignores layer_types)
        if (c.Get("layer_types") is { } lt)
        {
            if (lt.ValueKind != System.Text.Json.JsonValueKind.Array || lt.GetArrayLength() != numLayers)
                throw c.Error("layer_types", $"expected a list of {numLayers} layer types", "fix config.json");
            var flags = lt.EnumerateArray().Select(e => c.AsString("layer_types", e) switch
            {
                "sliding_attention" => true,
                "full_attention" => false,
                var s => throw c.Error("layer_types", $"unknown layer type '{s}'", "use full_attention or sliding_attention"),
            });
            return (window, [.. flags]);
        }
        // without layer_types, transformers' defaults: Gemma 2 alternates (even layers slide), Gemma 3 slides
        // except every sliding_window_pattern-th layer, qwen2/qwen3 slide from max_window_layers on
        if (type == "gemma2") return (window, [.. Enumerable.Range(0, numLayers).Select(i => (i + 1) % 2 == 1)]);
        if (type == "gemma3_text")
        {
            var pattern = c.IntOpt("sliding_window_pattern") ?? c.IntOpt("_sliding_window_pattern") ?? 6;
            return (window, [.. Enumerable.Range(0, numLayers).Select(i => (i + 1) % pattern != 0)]);
        }
        var first = c.IntOpt("max_window_layers") ?? 28;
        return (window, [.. Enumerable.Range(0, numLayers).Select(i => i >= first)]);
    }

    /// <summary>
    /// A stable hash of config.json and the safetensors headers (names, dtypes, shapes, offsets)
    /// of <paramref name="modelDir"/>; reads no weights.
    /// </summary>
    public static string Fingerprint(string modelDir) => ModelFingerprint.Compute(modelDir);
}
