using System.Text.Json;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.Inference.Export;
using MixLoRA.Runtime;

namespace MixLoRA.Inference.Tests.Fixtures;

/// <summary>Plain LoRA adapter folders (peft_type LORA, PEFT keys) with random non-zero A and B on attention projections.</summary>
internal static class TestLora
{
    /// <summary>Writes adapter_config.json + adapter_model.safetensors; returns the folder and the tensors as host feeds.</summary>
    public static (string Dir, Dictionary<string, HostTensor> Feeds) WriteAdapter(ModelConfig cfg, int rank, double alpha, int seed, params string[] modules)
    {
        var dir = Files.TempDir();
        var config = new Dictionary<string, object>
        {
            ["peft_type"] = "LORA", ["task_type"] = "CAUSAL_LM", ["r"] = rank, ["lora_alpha"] = alpha,
            ["lora_dropout"] = 0.0, ["target_modules"] = modules,
        };
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), JsonSerializer.Serialize(config));
        var acfg = AdapterConfig.Load(dir);
        var rng = new Random(seed);
        var tensors = new List<(string, long[], float[])>();
        var feeds = new Dictionary<string, HostTensor>();
        for (var l = 0; l < cfg.NumLayers; l++)
        {
            foreach (var m in modules)
            {
                long outF = m is "q_proj" or "o_proj" ? cfg.NumHeads * cfg.HeadDim : cfg.NumKvHeads * cfg.HeadDim;
                long inF = m == "o_proj" ? cfg.NumHeads * cfg.HeadDim : cfg.HiddenSize;
                foreach (var (ab, shape) in new[] { ('A', new[] { rank, inF }), ('B', new[] { outF, rank }) })
                {
                    var v = Enumerable.Range(0, (int)(shape[0] * shape[1])).Select(_ => (float)((rng.NextDouble() - 0.5) * 0.4)).ToArray();
                    var key = AttentionMerge.LoraKey(acfg, l, m, ab);
                    tensors.Add((key, shape, v));
                    feeds[key] = HostTensor.Of(v, shape);
                }
            }
        }
        SafetensorsWriter.WriteFloats(Path.Combine(dir, AdapterWeights.SafetensorsName), tensors);
        return (dir, feeds);
    }

    /// <summary>A fresh graph-side adapter for the folder (each graph build needs its own).</summary>
    public static AdapterGraph Graph(string dir) => new(AdapterConfig.Load(dir), DType.Float32, training: null);
}
