using System.Collections.Immutable;
using MixLoRA.GraphBuilder.IO;

namespace MixLoRA.GraphBuilder.Models;

/// <summary>
/// The architecture of a LLaMA-family decoder (llama, mistral, qwen2) as read from a HF
/// <c>config.json</c>, with the family's defaults filled in and consistency checked.
/// Qwen3 is not accepted: it adds q/k RMSNorm, which the model graphs do not build.
/// </summary>
public sealed partial record ModelConfig
{
    public static readonly string[] SupportedModelTypes = ["llama", "mistral", "qwen2"];

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

    /// <summary>RoPE inverse frequencies [HeadDim/2], as transformers computes them.</summary>
    public double[] RopeInvFreq() => Rope.InvFreq(HeadDim);

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
        var act = c.StrOpt("hidden_act") ?? "silu";
        if (!SupportedActivations.Contains(act))
            throw c.Error("hidden_act", $"unsupported activation '{act}'", $"use one of {string.Join(", ", SupportedActivations)}");
        var eps = c.DoubleOpt("rms_norm_eps") ?? 1e-6;
        if (!(eps > 0)) throw c.Error("rms_norm_eps", $"must be positive, got {eps}", "fix config.json");
        var (qkvBias, oBias, mlpBias) = Biases(c, type);
        var (window, sliding) = Sliding(c, type, layers);
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
            TieWordEmbeddings = c.Bool("tie_word_embeddings", false),
            AttentionBias = qkvBias,
            OProjBias = oBias,
            MlpBias = mlpBias,
            SlidingWindow = window,
            SlidingLayers = sliding,
            Rope = RopeScaling.Read(c, 10000.0),
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
        "qwen2" => 32768,
        _ => 2048,
    };

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
            "qwen2" when c.Bool("use_sliding_window", false) => Window(),
            _ => null,
        };
        if (window is null) return (null, [.. new bool[numLayers]]);
        if (window <= 0) throw c.Error("sliding_window", $"must be positive, got {window}", "fix config.json or set it to null");
        if (type == "mistral") return (window, [.. Enumerable.Repeat(true, numLayers)]);   // Mistral ignores layer_types
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
        // qwen2: only layers from max_window_layers on use the window (transformers' layer_types rule)
        var first = c.IntOpt("max_window_layers") ?? 28;
        return (window, [.. Enumerable.Range(0, numLayers).Select(i => i >= first)]);
    }

    /// <summary>
    /// A stable hash of config.json and the safetensors headers (names, dtypes, shapes, offsets)
    /// of <paramref name="modelDir"/>; reads no weights.
    /// </summary>
    public static string Fingerprint(string modelDir) => ModelFingerprint.Compute(modelDir);
}
