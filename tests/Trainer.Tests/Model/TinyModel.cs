using System.Text.Json.Nodes;
using MixLoRA.GraphBuilder.IO;

namespace MixLoRA.Trainer.Tests.Model;

/// <summary>
/// A tiny random LLaMA-family checkpoint the tests write themselves: a hand-written config.json (either
/// transformers generation's rope spelling) and model.safetensors with seeded random weights. The same
/// description drives <see cref="NaiveLlama"/>, so nothing of the graph code is shared with the reference.
/// </summary>
internal sealed record TinyModel
{
    public string ModelType { get; init; } = "llama";
    public int Hidden { get; init; } = 32;
    public int Intermediate { get; init; } = 48;
    public int Layers { get; init; } = 2;
    public int Heads { get; init; } = 4;
    public int KvHeads { get; init; } = 2;
    public int HeadDim { get; init; } = 8;
    public int Vocab { get; init; } = 64;
    public double Eps { get; init; } = 1e-5;
    public double Theta { get; init; } = 10000;
    public bool Tied { get; init; }
    public bool AttentionBias { get; init; }                // llama: q/k/v/o bias
    public int? Window { get; init; }                       // mistral: sliding_window; qwen2: with use_sliding_window
    public int MaxWindowLayers { get; init; }               // qwen2: first layer that uses the window
    public string RopeType { get; init; } = "default";     // default, linear, llama3
    public double Factor { get; init; } = 1;
    public double LowFreqFactor { get; init; } = 1;
    public double HighFreqFactor { get; init; } = 4;
    public int OriginalMax { get; init; } = 64;
    public bool Transformers4 { get; init; }                // rope_theta + rope_scaling at top level
    public bool WriteHeadDim { get; init; } = true;
    public int? PadTokenId { get; init; }

    public bool QkvBias => ModelType == "qwen2" || (ModelType == "llama" && AttentionBias);
    public bool OBias => ModelType == "llama" && AttentionBias;

    /// <summary>The window layer <paramref name="layer"/> attends through, as transformers applies it.</summary>
    public int? WindowOf(int layer) => ModelType switch
    {
        "mistral" => Window,
        "qwen2" when Window is not null && layer >= MaxWindowLayers => Window,
        _ => null,
    };

    public string ConfigJson()
    {
        var c = new JsonObject
        {
            ["architectures"] = new JsonArray("LlamaForCausalLM"),
            ["model_type"] = ModelType,
            ["hidden_size"] = Hidden,
            ["intermediate_size"] = Intermediate,
            ["num_hidden_layers"] = Layers,
            ["num_attention_heads"] = Heads,
            ["num_key_value_heads"] = KvHeads,
            ["rms_norm_eps"] = Eps,
            ["hidden_act"] = "silu",
            ["vocab_size"] = Vocab,
            ["max_position_embeddings"] = 256,
            ["tie_word_embeddings"] = Tied,
            ["bos_token_id"] = 1,
            ["eos_token_id"] = 2,
        };
        if (WriteHeadDim) c["head_dim"] = HeadDim;
        if (PadTokenId is { } pad) c["pad_token_id"] = pad;
        switch (ModelType)
        {
            case "llama":
                c["attention_bias"] = AttentionBias;
                c["mlp_bias"] = false;
                break;
            case "mistral":
                c["sliding_window"] = Window;
                break;
            case "qwen2":
                c["use_sliding_window"] = Window is not null;
                c["sliding_window"] = Window ?? 4096;
                c["max_window_layers"] = MaxWindowLayers;
                break;
        }
        var rope = new JsonObject { ["rope_type"] = RopeType };
        if (RopeType != "default") rope["factor"] = Factor;
        if (RopeType == "llama3")
        {
            rope["low_freq_factor"] = LowFreqFactor;
            rope["high_freq_factor"] = HighFreqFactor;
            rope["original_max_position_embeddings"] = OriginalMax;
        }
        if (Transformers4)
        {
            c["rope_theta"] = Theta;
            c["rope_scaling"] = RopeType == "default" ? null : rope;
        }
        else
        {
            rope["rope_theta"] = Theta;
            c["rope_parameters"] = rope;
        }
        return c.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Seeded random weights by HF key (norm weights near 1, the rest small).</summary>
    public Dictionary<string, (long[] Shape, float[] Data)> Weights(int seed)
    {
        var rng = new Random(seed);
        var w = new Dictionary<string, (long[], float[])>(StringComparer.Ordinal);
        void Add(string key, float scale, float offset, params long[] shape)
        {
            var n = shape.Aggregate(1L, (a, b) => a * b);
            w[key] = (shape, Enumerable.Range(0, (int)n).Select(_ => offset + (scale * (float)((2 * rng.NextDouble()) - 1))).ToArray());
        }
        var (d, f, q, kv) = ((long)Hidden, (long)Intermediate, (long)Heads * HeadDim, (long)KvHeads * HeadDim);
        Add("model.embed_tokens.weight", 1f, 0, Vocab, d);
        for (var l = 0; l < Layers; l++)
        {
            var p = $"model.layers.{l}";
            Add($"{p}.input_layernorm.weight", 0.2f, 1, d);
            Add($"{p}.post_attention_layernorm.weight", 0.2f, 1, d);
            Add($"{p}.self_attn.q_proj.weight", 0.3f, 0, q, d);
            Add($"{p}.self_attn.k_proj.weight", 0.3f, 0, kv, d);
            Add($"{p}.self_attn.v_proj.weight", 0.3f, 0, kv, d);
            Add($"{p}.self_attn.o_proj.weight", 0.3f, 0, d, q);
            if (QkvBias)
            {
                Add($"{p}.self_attn.q_proj.bias", 0.5f, 0, q);
                Add($"{p}.self_attn.k_proj.bias", 0.5f, 0, kv);
                Add($"{p}.self_attn.v_proj.bias", 0.5f, 0, kv);
            }
            if (OBias) Add($"{p}.self_attn.o_proj.bias", 0.5f, 0, d);
            Add($"{p}.mlp.gate_proj.weight", 0.3f, 0, f, d);
            Add($"{p}.mlp.up_proj.weight", 0.3f, 0, f, d);
            Add($"{p}.mlp.down_proj.weight", 0.3f, 0, d, f);
        }
        Add("model.norm.weight", 0.2f, 1, d);
        if (!Tied) Add("lm_head.weight", 0.3f, 0, Vocab, d);
        return w;
    }

    /// <summary>Writes config.json and model.safetensors into <paramref name="dir"/> (created); returns the weights.</summary>
    public Dictionary<string, (long[] Shape, float[] Data)> Write(string dir, int seed = 7)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), ConfigJson());
        var w = Weights(seed);
        SafetensorsWriter.WriteFloats(Path.Combine(dir, "model.safetensors"), w.Select(p => (p.Key, p.Value.Shape, p.Value.Data)));
        return w;
    }
}
