using System.Text.Json;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Inference.Export;
using MixLoRA.Trainer.Runtime;

namespace MixLoRA.Inference.Tests.Fixtures;

/// <summary>
/// A plain LoRA test adapter on q_proj (and optionally v_proj): Δ(x) = s · x Aᵀ Bᵀ, its A/B declared as graph
/// inputs under the reference keys (mixlora.layers.{l}.self_attn.{m}.lora_{A,B}.weight), as an IAdapter must.
/// </summary>
internal sealed class TestLora(int rank, double scale, params string[] modules) : IAdapter
{
    public Value? LinearDelta(Builder b, LinearSite site, Value x)
    {
        if (!modules.Contains(site.Module)) return null;
        Value Param(char ab, long[] shape)
        {
            var name = AttentionMerge.LoraKey(site.Layer, site.Module, ab);
            return b.Has(name) ? b.Get(name) : b.Input(name, x.DType, Shape.Of(shape.Select(Dim.Of).ToArray()));
        }
        var a = Param('A', [rank, site.In]);
        var bm = Param('B', [site.Out, rank]);
        return b.Scale(b.Linear(b.Linear(x, a), bm), scale);                             // (N, out)
    }

    public Value? Mlp(Builder b, MlpSite site, Value x) => null;

    /// <summary>
    /// Writes an adapter folder (adapter_config.json with peft_type LORA + adapter_model.safetensors) with random
    /// A and B (B non-zero so the adapter changes the logits); returns the folder and the tensors as host feeds.
    /// </summary>
    public static (string Dir, Dictionary<string, HostTensor> Feeds) WriteAdapter(ModelConfig cfg, int rank, double alpha, int seed, params string[] modules)
    {
        var dir = Files.TempDir();
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
                    var key = AttentionMerge.LoraKey(l, m, ab);
                    tensors.Add((key, shape, v));
                    feeds[key] = HostTensor.Of(v, shape);
                }
            }
        }
        SafetensorsWriter.WriteFloats(Path.Combine(dir, "adapter_model.safetensors"), tensors);
        var config = new Dictionary<string, object>
        {
            ["peft_type"] = "LORA", ["task_type"] = "CAUSAL_LM", ["r"] = rank, ["lora_alpha"] = alpha,
            ["lora_dropout"] = 0.0, ["target_modules"] = modules,
        };
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), JsonSerializer.Serialize(config));
        return (dir, feeds);
    }
}
