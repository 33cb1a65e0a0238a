using System.Reflection;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.Cli.Bench;
using MixLoRA.Trainer.Tests.Model;

namespace MixLoRA.Trainer.Tests.Bench;

/// <summary>
/// What the bench promises beyond its counts: the loss it reports is the causal-LM loss of its random batch on
/// its random weights (checked against the independent <see cref="NaiveLlama"/> forward), and its JSON line is
/// <see cref="BenchResult"/> itself, with the keys the tools and the README read.
/// </summary>
[TestClass]
public sealed class BenchLossAndJsonTests
{
    private const int D = 64, F = 160, L = 2, H = 4, Hkv = 2, Dh = 16, V = 256, T = 12, B = 2, Seed = 42;

    /// <summary>
    /// With no warm-up and one timed step, last_loss is the loss of step 1, before any update: LoRA's B starts
    /// at 0, so it is the frozen model's mean cross-entropy of position t predicting token t+1 over the B·(T−1)
    /// positions of the random batch (ids uniform in [0, V) from new Random(seed), labels = ids).
    /// </summary>
    [TestMethod]
    public void StepOneLossIsTheFrozenModelsCrossEntropyOnTheRandomBatch()
    {
        var result = BenchRunner.Run(new BenchOptions
        {
            Config = "tiny", Adapter = new AdapterChoice("lora", 16, 32, Dropout: 0), SeqLen = T, Batch = B, Steps = 1, Warmup = 0, Seed = Seed,
        });

        var rng = new Random(Seed);
        var ids = Enumerable.Range(0, B * T).Select(_ => rng.Next(V)).ToArray();
        CollectionAssert.AreEqual(ids.Select(i => (long)i).ToArray(), BenchRunner.RandomBatch(B, T, V, Seed).InputIds, "the bench's batch is the seeded stream");

        var m = new TinyModel { Hidden = D, Intermediate = F, Layers = L, Heads = H, KvHeads = Hkv, HeadDim = Dh, Vocab = V, Eps = 1e-5, Theta = 10000 };
        var random = new RandomWeights((ulong)Seed);
        var shapes = new Dictionary<string, long[]>
        {
            ["model.embed_tokens.weight"] = [V, D], ["model.norm.weight"] = [D], ["lm_head.weight"] = [V, D],
        };
        for (var l = 0; l < L; l++)
        {
            var p = $"model.layers.{l}";
            shapes[$"{p}.input_layernorm.weight"] = [D];
            shapes[$"{p}.post_attention_layernorm.weight"] = [D];
            shapes[$"{p}.self_attn.q_proj.weight"] = [H * Dh, D];
            shapes[$"{p}.self_attn.k_proj.weight"] = [Hkv * Dh, D];
            shapes[$"{p}.self_attn.v_proj.weight"] = [Hkv * Dh, D];
            shapes[$"{p}.self_attn.o_proj.weight"] = [D, H * Dh];
            shapes[$"{p}.mlp.gate_proj.weight"] = [F, D];
            shapes[$"{p}.mlp.up_proj.weight"] = [F, D];
            shapes[$"{p}.mlp.down_proj.weight"] = [D, F];
        }
        var w = shapes.ToDictionary(kv => kv.Key, kv => (kv.Value, random.Load(kv.Key, DType.Float32, kv.Value).Floats()));

        double nll = 0;
        for (var r = 0; r < B; r++)
        {
            var row = ids.Skip(r * T).Take(T).ToArray();
            var logits = NaiveLlama.Forward(m, w, row, [.. row.Select(_ => 1)]);
            for (var t = 0; t < T - 1; t++)
            {
                var max = logits[t].Max();
                var logZ = max + Math.Log(logits[t].Sum(z => Math.Exp(z - max)));
                nll += logZ - logits[t][row[t + 1]];
            }
        }
        var expected = nll / (B * (T - 1));
        Assert.AreEqual(expected, result.LastLoss, 2e-5, $"reference {expected}, bench {result.LastLoss}");
    }

    /// <summary>
    /// The keys consumers read (tools/bench-cpu.sh reads seq_len, batch, ms_per_step_median, tokens_per_step,
    /// trainable_params and peak_memory_gib; tools/gpu-session.sh keeps whole lines; the README lists the rest), in
    /// the order the line has always had.
    /// </summary>
    private static readonly string[] Keys =
    [
        "config", "method", "device", "dtype", "seq_len", "batch", "r", "lora_alpha", "experts", "top_k", "dropout",
        "gradient_checkpointing", "fused_kernels", "cuda_graph", "warmup_steps", "steps", "tokens_per_step", "tokens_per_s",
        "ms_per_step_median", "ms_per_step_mean", "ms_per_step_min", "peak_memory_bytes", "peak_memory_gib", "peak_memory_source",
        "device_state_bytes", "trainable_params", "trainable_params_active", "frozen_params", "frozen_matmul_params",
        "flops_per_token", "flop_formula", "achieved_tflops", "peak_tflops", "mfu", "setup_s", "last_loss",
        "lengths", "padded_real_tokens_per_s", "padded_padding_fraction", "packed_real_tokens_per_s", "packed_padding_fraction",
        "jobs", "per_job_tokens_per_s", "world_size", "solo_tokens_per_s", "scaling_efficiency",
    ];

    private static BenchResult Sample(double lastLoss = 5.123456789, double? mfu = 0.123456789, int? experts = 8) => new()
    {
        Config = "tiny", Method = "mixlora", Device = "cuda", DType = "bfloat16", SeqLen = 128, Batch = 4, R = 16, LoraAlpha = 32,
        Experts = experts, TopK = experts is null ? null : 2, Dropout = 0.05, GradientCheckpointing = "on", FusedKernels = ["SwiGluSlots", "SlotLora"],
        CudaGraph = true, WarmupSteps = 3, Steps = 8, TokensPerStep = 512, TokensPerS = 12345.6789, MsPerStepMedian = 41.23456,
        MsPerStepMean = 41.98765, MsPerStepMin = 40.00049, PeakMemoryBytes = 3L << 30 | 123456789, PeakMemorySource = "nvidia-smi",
        DeviceStateBytes = 987654321, Parameters = new ParameterCount(1001, 501, 20002, 19999), FlopsPerToken = 1.5e9,
        AchievedTflops = 18.518518, PeakTflops = 150, Mfu = mfu, SetupS = 12.3456, LastLoss = lastLoss,
    };

    /// <summary>
    /// The line as it was written before it came from the record: every key typed out with its rounding. Kept here
    /// as the compatibility reference for <see cref="BenchResult.ToJson"/>.
    /// </summary>
    private static string Legacy(BenchResult r) => new JsonObject
    {
        ["config"] = r.Config, ["method"] = r.Method, ["device"] = r.Device, ["dtype"] = r.DType, ["seq_len"] = r.SeqLen, ["batch"] = r.Batch,
        ["r"] = r.R, ["lora_alpha"] = r.LoraAlpha, ["experts"] = r.Experts, ["top_k"] = r.TopK, ["dropout"] = r.Dropout,
        ["gradient_checkpointing"] = r.GradientCheckpointing, ["fused_kernels"] = new JsonArray(r.FusedKernels.Select(k => (JsonNode?)k).ToArray()),
        ["cuda_graph"] = r.CudaGraph, ["warmup_steps"] = r.WarmupSteps, ["steps"] = r.Steps, ["tokens_per_step"] = r.TokensPerStep,
        ["tokens_per_s"] = Math.Round(r.TokensPerS, 1), ["ms_per_step_median"] = Math.Round(r.MsPerStepMedian, 3),
        ["ms_per_step_mean"] = Math.Round(r.MsPerStepMean, 3), ["ms_per_step_min"] = Math.Round(r.MsPerStepMin, 3),
        ["peak_memory_bytes"] = r.PeakMemoryBytes, ["peak_memory_gib"] = Math.Round(r.PeakMemoryBytes / (double)(1L << 30), 3),
        ["peak_memory_source"] = r.PeakMemorySource, ["device_state_bytes"] = r.DeviceStateBytes,
        ["trainable_params"] = r.Parameters.Trainable, ["trainable_params_active"] = r.Parameters.TrainableActive,
        ["frozen_params"] = r.Parameters.Frozen, ["frozen_matmul_params"] = r.Parameters.FrozenMatmul,
        ["flops_per_token"] = r.FlopsPerToken, ["flop_formula"] = FlopModel.Formula, ["achieved_tflops"] = Math.Round(r.AchievedTflops, 4),
        ["peak_tflops"] = r.PeakTflops, ["mfu"] = r.Mfu is { } m ? Math.Round(m, 4) : null, ["setup_s"] = Math.Round(r.SetupS, 2),
        ["last_loss"] = double.IsFinite(r.LastLoss) ? Math.Round(r.LastLoss, 5) : null,
        ["lengths"] = r.Lengths, ["padded_real_tokens_per_s"] = Round(r.PaddedRealTokensPerS, 1), ["padded_padding_fraction"] = Round(r.PaddedPaddingFraction, 4),
        ["packed_real_tokens_per_s"] = Round(r.PackedRealTokensPerS, 1), ["packed_padding_fraction"] = Round(r.PackedPaddingFraction, 4),
        ["jobs"] = r.Jobs, ["per_job_tokens_per_s"] = Round(r.PerJobTokensPerS, 1),
        ["world_size"] = r.WorldSize, ["solo_tokens_per_s"] = Round(r.SoloTokensPerS, 1), ["scaling_efficiency"] = Round(r.ScalingEfficiency, 4),
    }.ToJsonString(new JsonSerializerOptions { WriteIndented = false, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });

    private static double? Round(double? v, int digits) => v is { } d ? Math.Round(d, digits) : null;

    [TestMethod]
    public void JsonIsTheSameLineAsBeforeWithTheSameKeysInOrder()
    {
        foreach (var r in new[] { Sample(), Sample(double.NaN, null, null), Sample(double.PositiveInfinity) with { FusedKernels = [], PeakTflops = null },
            Sample() with { Lengths = "arc", PaddedRealTokensPerS = 123.456, PaddedPaddingFraction = 0.51234, PackedRealTokensPerS = 987.65, PackedPaddingFraction = 0.012345 } })
        {
            var json = r.ToJson();
            Assert.AreEqual(Legacy(r), json);
            CollectionAssert.AreEqual(Keys, JsonDocument.Parse(json).RootElement.EnumerateObject().Select(p => p.Name).ToArray());
            Assert.DoesNotContain("\n", json, "one line");
        }
        var nan = JsonDocument.Parse(Sample(double.NaN).ToJson()).RootElement;
        Assert.AreEqual(JsonValueKind.Null, nan.GetProperty("last_loss").ValueKind, "a non-finite loss is null");
        var j = JsonDocument.Parse(Sample().ToJson()).RootElement;
        Assert.AreEqual(12345.7, j.GetProperty("tokens_per_s").GetDouble());
        Assert.AreEqual(0.1235, j.GetProperty("mfu").GetDouble());
        Assert.AreEqual(3.115, j.GetProperty("peak_memory_gib").GetDouble(), "(3·2³⁰ + 123456789) / 2³⁰ = 3.11498 → 3.115");
    }

    /// <summary>
    /// Every public property of the record reaches the line: under its snake_case name (or its JsonPropertyName),
    /// and the one property left out with [JsonIgnore] (the nested parameter counts) through one `*_params` key per
    /// count.
    /// </summary>
    [TestMethod]
    public void EveryPropertyOfTheRecordAppearsInTheJson()
    {
        var r = Sample();
        var json = JsonDocument.Parse(r.ToJson()).RootElement;
        var keys = json.EnumerateObject().Select(p => p.Name).ToHashSet();
        var props = typeof(BenchResult).GetProperties(BindingFlags.Public | BindingFlags.Instance);
        Assert.IsGreaterThanOrEqualTo(Keys.Length - 4, props.Length);
        var serialized = new List<string>();
        foreach (var p in props)
        {
            if (p.GetCustomAttribute<JsonIgnoreAttribute>() is not null)
            {
                Assert.AreEqual(typeof(ParameterCount), p.PropertyType, $"{p.Name} is ignored: only the nested counts may be");
                // the sample's four counts differ, so each one found under a *_params key is that count
                foreach (var inner in p.PropertyType.GetProperties().Where(x => x.Name != "EqualityContract"))
                {
                    var v = Convert.ToInt64(inner.GetValue(r.Parameters), System.Globalization.CultureInfo.InvariantCulture);
                    var hits = json.EnumerateObject().Where(k => k.Name.Contains("_params", StringComparison.Ordinal) && k.Value.ValueKind == JsonValueKind.Number && k.Value.GetInt64() == v).ToList();
                    Assert.HasCount(1, hits, $"{p.Name}.{inner.Name} = {v}");
                }
                continue;
            }
            var name = p.GetCustomAttribute<JsonPropertyNameAttribute>()?.Name ?? JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name);
            Assert.Contains(name, keys, p.Name);
            serialized.Add(name);
            var value = p.GetValue(r);
            var element = json.GetProperty(name);
            switch (value)
            {
                case string s: Assert.AreEqual(s, element.GetString(), name); break;
                case bool b: Assert.AreEqual(b, element.GetBoolean(), name); break;
                case int or long: Assert.AreEqual(Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture), element.GetInt64(), name); break;
                case double d: Assert.AreEqual(d, element.GetDouble(), 0.051, name); break;       // rounded to 1+ decimals
                case IReadOnlyList<string> list: CollectionAssert.AreEqual(list.ToArray(), element.EnumerateArray().Select(e => e.GetString()).ToArray(), name); break;
                case null: Assert.AreEqual(JsonValueKind.Null, element.ValueKind, name); break;
                default: Assert.Fail($"{p.Name}: a {value.GetType().Name} property in the bench line"); break;
            }
        }
        CollectionAssert.AreEquivalent(keys.ToArray(), serialized.Concat(["trainable_params", "trainable_params_active", "frozen_params", "frozen_matmul_params"]).Distinct().ToArray(), "no key without a property");
    }
}
