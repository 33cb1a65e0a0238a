using System.Text.Json;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.Models;

namespace MixLoRA.Cli.Bench;

/// <summary>A named model shape for the bench, with the batch shape it is usually measured at.</summary>
public sealed record BenchPreset(string Name, ModelConfig Model, int SeqLen, int Batch);

/// <summary>The adapter the bench trains: method (<see cref="BenchModels.Methods"/>) and its sizes.</summary>
public sealed record AdapterChoice(string Method, int R = 16, double Alpha = 32, int Experts = 8, int TopK = 2, double Dropout = 0.05);

/// <summary>
/// Model shapes the bench knows by name (tiny: the parity-like toy; small: a mid-size CPU shape;
/// tinyllama-1.1b and llama2-7b: the docs/design.md §9 reference shapes) or reads from a config.json, and the
/// adapter configs it trains (docs/design.md §9: r 16, alpha 32, all 7 targets; MixLoRA 8 experts top-2).
/// </summary>
public static class BenchModels
{
    public static readonly IReadOnlyList<string> Names = ["tiny", "small", "tinyllama-1.1b", "llama2-7b", "qwen3-0.6b", "gemma3-1b"];

    /// <summary>--method: MIXLORA's strategies mixlora (top-k) and mixlora-switch, LORA, LORAMOE, MOLA, HYDRALORA.</summary>
    public static readonly IReadOnlyList<string> Methods = ["mixlora", "mixlora-switch", "lora", "loramoe", "mola", "hydralora"];

    /// <summary>A preset by name, or the model of a config.json file / HF model folder.</summary>
    public static BenchPreset Resolve(string nameOrFile) => nameOrFile switch
    {
        "tiny" => new(nameOrFile, Llama(64, 160, 2, 4, 2, 256, 256), 128, 4),
        "small" => new(nameOrFile, Llama(256, 688, 4, 8, 4, 8000, 2048), 256, 4),
        "tinyllama-1.1b" => new(nameOrFile, Llama(2048, 5632, 22, 32, 4, 32000, 2048), 512, 8),
        "llama2-7b" => new(nameOrFile, Llama(4096, 11008, 32, 32, 32, 32000, 4096), 512, 4),
        // the published config.json sizes of Qwen/Qwen3-0.6B and google/gemma-3-1b-pt (text)
        "qwen3-0.6b" => new(nameOrFile, Config(new()
        {
            ["model_type"] = "qwen3", ["hidden_size"] = 1024, ["intermediate_size"] = 3072, ["num_hidden_layers"] = 28, ["num_attention_heads"] = 16,
            ["num_key_value_heads"] = 8, ["head_dim"] = 128, ["vocab_size"] = 151936, ["max_position_embeddings"] = 40960, ["rms_norm_eps"] = 1e-6,
            ["rope_theta"] = 1000000.0, ["tie_word_embeddings"] = true,
        }), 512, 8),
        "gemma3-1b" => new(nameOrFile, Config(new()
        {
            ["model_type"] = "gemma3_text", ["hidden_size"] = 1152, ["intermediate_size"] = 6912, ["num_hidden_layers"] = 26, ["num_attention_heads"] = 4,
            ["num_key_value_heads"] = 1, ["head_dim"] = 256, ["vocab_size"] = 262144, ["max_position_embeddings"] = 32768, ["rms_norm_eps"] = 1e-6,
            ["query_pre_attn_scalar"] = 256, ["sliding_window"] = 512, ["sliding_window_pattern"] = 6, ["rope_theta"] = 1000000.0,
            ["rope_local_base_freq"] = 10000.0, ["hidden_activation"] = "gelu_pytorch_tanh", ["tie_word_embeddings"] = true,
        }), 512, 8),
        _ when File.Exists(nameOrFile) || Directory.Exists(nameOrFile) => new(nameOrFile, ModelConfig.Load(nameOrFile), 512, 1),
        _ => throw Fail.User($"--config '{nameOrFile}' is neither a known shape nor a file", $"use one of {string.Join(", ", Names)}, or a config.json path"),
    };

    /// <summary>A config.json's keys, parsed (and so checked) as a user's file is.</summary>
    private static ModelConfig Config(Dictionary<string, object> keys)
    {
        using var doc = JsonDocument.Parse(JsonSerializer.Serialize(keys));
        return ModelConfig.Parse(new JsonFields("(bench preset)", doc.RootElement));
    }

    /// <summary>A llama config.json with these sizes (head_dim = hidden / heads, silu, RMSNorm eps 1e-5, RoPE θ 10000).</summary>
    public static ModelConfig Llama(int hidden, int inter, int layers, int heads, int kvHeads, int vocab, int maxPositions) =>
        Config(new Dictionary<string, object>
        {
            ["model_type"] = "llama",
            ["hidden_size"] = hidden,
            ["intermediate_size"] = inter,
            ["num_hidden_layers"] = layers,
            ["num_attention_heads"] = heads,
            ["num_key_value_heads"] = kvHeads,
            ["hidden_act"] = "silu",
            ["rms_norm_eps"] = 1e-5,
            ["vocab_size"] = vocab,
            ["max_position_embeddings"] = maxPositions,
            ["rope_theta"] = 10000.0,
            ["tie_word_embeddings"] = false,
        });

    /// <summary>
    /// The adapter_config the bench trains, parsed (and so checked) like a user's file: --experts experts (HydraLoRA: B
    /// heads), --top-k for mixlora and mola; every other key at its MoE-PEFT default (mixlora-switch: expert_capacity 32).
    /// </summary>
    public static AdapterConfig Adapter(AdapterChoice a)
    {
        var cfg = new Dictionary<string, object>
        {
            ["peft_type"] = a.Method switch
            {
                "mixlora" or "mixlora-switch" => "MIXLORA",
                "lora" or "loramoe" or "mola" or "hydralora" => a.Method.ToUpperInvariant(),
                _ => throw Fail.User($"unknown --method '{a.Method}'", $"use one of {string.Join(", ", Methods)}"),
            },
            ["r"] = a.R,
            ["lora_alpha"] = a.Alpha,
            ["lora_dropout"] = a.Dropout,
            ["target_modules"] = AdapterConfig.LlamaTargets.ToArray(),
        };
        if (a.Method != "lora") cfg["num_experts"] = a.Experts;
        if (a.Method.StartsWith("mixlora", StringComparison.Ordinal)) cfg["routing_strategy"] = a.Method;
        if (a.Method is "mixlora" or "mola") cfg["top_k"] = a.TopK;
        using var doc = JsonDocument.Parse(JsonSerializer.Serialize(cfg));
        return AdapterConfig.Parse(new JsonFields("(bench adapter: --r/--experts/--top-k)", doc.RootElement));
    }
}
