using System.Text.Json.Nodes;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.Text.Tokenization;

namespace MixLoRA.Cli.Demo;

/// <summary>
/// The demo's tiny LLaMA checkpoint, generated from a seed: a HF `config.json` and `model.safetensors`
/// with HF key names, and its tokenizer files (<see cref="WriteTokenizer"/>). Weights are random with
/// fan-in scaling (embeddings N(0, 1), projections N(0, 1/fan_in), lm_head N(0, 1/hidden), norms 1), so
/// the residual stream keeps unit scale and an adapter can move the logits far enough for the loss to fall
/// clearly.
/// </summary>
public static class DemoModel
{
    /// <summary>The demo architecture for a vocabulary of <paramref name="vocabSize"/> ids (rounded up to 64).</summary>
    public static ModelConfig Config(int vocabSize) => new()
    {
        ModelType = "llama",
        HiddenSize = 96,
        IntermediateSize = 192,
        NumLayers = 4,
        NumHeads = 4,
        NumKvHeads = 2,
        HeadDim = 24,
        RmsNormEps = 1e-5,
        HiddenAct = "silu",
        VocabSize = (vocabSize + 63) / 64 * 64,
        Rope = new RopeScaling("default", 10000.0),
        MaxPositionEmbeddings = 256,
        PadTokenId = 0,
        BosTokenId = 1,
        EosTokenIds = [2],
        DType = "float32",
    };

    /// <summary>Writes config.json and model.safetensors into <paramref name="dir"/>.</summary>
    public static void Write(string dir, ModelConfig cfg, int seed)
    {
        Directory.CreateDirectory(dir);
        cfg.Save(dir);
        var rng = new Random(seed);
        long h = cfg.HiddenSize, f = cfg.IntermediateSize, q = (long)cfg.NumHeads * cfg.HeadDim, kv = (long)cfg.NumKvHeads * cfg.HeadDim, v = cfg.VocabSize;
        var tensors = new List<(string, long[], float[])> { ("model.embed_tokens.weight", [v, h], Normal(rng, v * h, 1.0)) };
        for (var l = 0; l < cfg.NumLayers; l++)
        {
            var p = $"model.layers.{l}.";
            tensors.Add((p + "input_layernorm.weight", [h], Ones(h)));
            tensors.Add((p + "self_attn.q_proj.weight", [q, h], Normal(rng, q * h, 1.0 / Math.Sqrt(h))));
            tensors.Add((p + "self_attn.k_proj.weight", [kv, h], Normal(rng, kv * h, 1.0 / Math.Sqrt(h))));
            tensors.Add((p + "self_attn.v_proj.weight", [kv, h], Normal(rng, kv * h, 1.0 / Math.Sqrt(h))));
            tensors.Add((p + "self_attn.o_proj.weight", [h, q], Normal(rng, h * q, 1.0 / Math.Sqrt(q))));
            tensors.Add((p + "post_attention_layernorm.weight", [h], Ones(h)));
            tensors.Add((p + "mlp.gate_proj.weight", [f, h], Normal(rng, f * h, 1.0 / Math.Sqrt(h))));
            tensors.Add((p + "mlp.up_proj.weight", [f, h], Normal(rng, f * h, 1.0 / Math.Sqrt(h))));
            tensors.Add((p + "mlp.down_proj.weight", [h, f], Normal(rng, h * f, 1.0 / Math.Sqrt(f))));
        }
        tensors.Add(("model.norm.weight", [h], Ones(h)));
        tensors.Add(("lm_head.weight", [v, h], Normal(rng, v * h, 1.0 / Math.Sqrt(h))));
        SafetensorsWriter.WriteFloats(Path.Combine(dir, "model.safetensors"), tensors);
    }

    /// <summary>
    /// Writes tokenizer.json and, derived from it and <paramref name="cfg"/>, tokenizer_config.json into
    /// <paramref name="dir"/> (hosts such as ONNX Runtime GenAI read the pair).
    /// </summary>
    public static void WriteTokenizer(string dir, JsonObject tokenizerJson, ModelConfig cfg)
    {
        ArgumentNullException.ThrowIfNull(tokenizerJson);
        Directory.CreateDirectory(dir);
        var file = Path.Combine(dir, "tokenizer.json");
        AtomicFile.WriteAllText(file, tokenizerJson.ToJsonString());
        TokenizerConfigFile.Write(Path.Combine(dir, TokenizerConfigFile.FileName), file, cfg);
    }

    private static float[] Ones(long n) => Enumerable.Repeat(1f, (int)n).ToArray();

    /// <summary>Box–Muller normal samples from the seeded generator.</summary>
    private static float[] Normal(Random rng, long n, double std)
    {
        var x = new float[n];
        for (var i = 0; i < n; i += 2)
        {
            var u1 = 1.0 - rng.NextDouble();
            var u2 = rng.NextDouble();
            var r = Math.Sqrt(-2 * Math.Log(u1)) * std;
            x[i] = (float)(r * Math.Cos(2 * Math.PI * u2));
            if (i + 1 < n) x[i + 1] = (float)(r * Math.Sin(2 * Math.PI * u2));
        }
        return x;
    }
}
