using System.Text.Json;
using MixLoRA.Cli;
using MixLoRA.Cli.Bench;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Trainer.Tests.Bench;

/// <summary>
/// mixlora-bench on the tiny shape: the JSON line has every field, the measurements are positive and finite,
/// and the parameter and FLOP counts equal an independent count from the model and adapter sizes.
/// (No timing assertions: step times depend on the machine.)
/// </summary>
[TestClass]
public sealed class BenchTests
{
    private const int D = 64, F = 160, L = 2, H = 4, Hkv = 2, Dh = 16, V = 256, R = 16, E = 8, K = 2, T = 32, B = 2;

    private static JsonElement Bench(string method, bool checkpointing = false)
    {
        var o = new BenchOptions
        {
            Config = "tiny", Adapter = new AdapterChoice(method, R, 2 * R, E, K), SeqLen = T, Batch = B,
            Steps = 2, Warmup = 1, GradientCheckpointing = checkpointing,
        };
        return JsonDocument.Parse(BenchRunner.Run(o).ToJson()).RootElement;
    }

    /// <summary>LoRA pairs r·(in + out) on q, k, v, o per layer.</summary>
    private static long AttentionLora => L * (long)R * ((D + (H * Dh)) + (D + (Hkv * Dh)) + (D + (Hkv * Dh)) + ((H * Dh) + D));

    private static long FrozenMatmul => (L * ((long)D * H * Dh + (2L * D * Hkv * Dh) + ((long)H * Dh * D) + (3L * D * F))) + ((long)V * D);

    [TestMethod]
    public void MixLoraJsonIsCompleteAndCountsMatch()
    {
        var j = Bench("mixlora");
        CheckMeasurements(j);
        var experts = L * (long)E * 3 * R * (D + F);           // gate, up, down: r·(D + F) each
        var router = L * (long)E * D;
        Assert.AreEqual(AttentionLora + experts + router, j.GetProperty("trainable_params").GetInt64());
        var active = AttentionLora + (experts * K / E) + router;
        Assert.AreEqual(active, j.GetProperty("trainable_params_active").GetInt64());
        Assert.AreEqual(E, j.GetProperty("experts").GetInt32());
        Assert.AreEqual(K, j.GetProperty("top_k").GetInt32());
        Assert.AreEqual((4.0 * FrozenMatmul) + (6.0 * active) + (12.0 * L * T * H * Dh), j.GetProperty("flops_per_token").GetDouble());
    }

    [TestMethod]
    public void LoraJsonIsCompleteAndCountsMatch()
    {
        var j = Bench("lora");
        CheckMeasurements(j);
        var trainable = AttentionLora + (L * 3L * R * (D + F));
        Assert.AreEqual(trainable, j.GetProperty("trainable_params").GetInt64());
        Assert.AreEqual(trainable, j.GetProperty("trainable_params_active").GetInt64());
        Assert.AreEqual(JsonValueKind.Null, j.GetProperty("experts").ValueKind);
        Assert.AreEqual((4.0 * FrozenMatmul) + (6.0 * trainable) + (12.0 * L * T * H * Dh), j.GetProperty("flops_per_token").GetDouble());
    }

    private static void CheckMeasurements(JsonElement j)
    {
        Assert.AreEqual("tiny", j.GetProperty("config").GetString());
        Assert.AreEqual("cpu", j.GetProperty("device").GetString());
        Assert.AreEqual("float32", j.GetProperty("dtype").GetString());
        Assert.AreEqual("off", j.GetProperty("gradient_checkpointing").GetString());
        Assert.AreEqual((long)B * T, j.GetProperty("tokens_per_step").GetInt64());
        foreach (var key in new[] { "tokens_per_s", "ms_per_step_median", "ms_per_step_mean", "ms_per_step_min", "achieved_tflops", "setup_s" })
        {
            var v = j.GetProperty(key).GetDouble();
            Assert.IsTrue(double.IsFinite(v) && v > 0, $"{key} = {v}");
        }
        var mean = j.GetProperty("ms_per_step_mean").GetDouble();
        Assert.AreEqual(B * T / (mean / 1000), j.GetProperty("tokens_per_s").GetDouble(), 0.05 + (1e-3 * j.GetProperty("tokens_per_s").GetDouble()));
        Assert.IsLessThanOrEqualTo(j.GetProperty("ms_per_step_median").GetDouble(), j.GetProperty("ms_per_step_min").GetDouble());
        Assert.IsGreaterThan(j.GetProperty("device_state_bytes").GetInt64(), j.GetProperty("peak_memory_bytes").GetInt64());
        Assert.AreEqual("process peak working set", j.GetProperty("peak_memory_source").GetString());
        var frozen = (2L * V * D) + D + (L * ((2L * D) + ((long)D * H * Dh) + (2L * D * Hkv * Dh) + ((long)H * Dh * D) + (3L * D * F)));
        Assert.AreEqual(frozen, j.GetProperty("frozen_params").GetInt64());
        Assert.AreEqual(FrozenMatmul, j.GetProperty("frozen_matmul_params").GetInt64());
        Assert.AreEqual(JsonValueKind.Null, j.GetProperty("mfu").ValueKind, "no MFU on the CPU without --peak-tflops");
        // achieved TFLOP/s = FLOPs per token × tokens/s (the FLOP model times the measured rate; rounded to 4 decimals)
        var achieved = j.GetProperty("flops_per_token").GetDouble() * j.GetProperty("tokens_per_s").GetDouble() / 1e12;
        Assert.AreEqual(achieved, j.GetProperty("achieved_tflops").GetDouble(), 5e-5 + (1e-3 * achieved));
        // the loss itself is checked against an independent forward in BenchLossAndJsonTests
        Assert.IsTrue(double.IsFinite(j.GetProperty("last_loss").GetDouble()));
    }

    [TestMethod]
    public void GradientCheckpointingTrainsTheSameStepWithRecomputedLayers()
    {
        var plain = Bench("mixlora");
        var ckpt = Bench("mixlora", checkpointing: true);
        Assert.AreEqual("on", ckpt.GetProperty("gradient_checkpointing").GetString());
        // the same seeds and batches; only dropout masks differ between the two runs
        Assert.AreEqual(plain.GetProperty("last_loss").GetDouble(), ckpt.GetProperty("last_loss").GetDouble(), 0.05);
    }

    [TestMethod]
    [DoNotParallelize]
    public void CommandPrintsOneJsonLine()
    {
        var stdout = new StringWriter();
        var old = Console.Out;
        Console.SetOut(stdout);
        try
        {
            Assert.AreEqual(0, Commands.Run(["bench", "--config", "tiny", "--method", "mixlora", "--seq-len", "16", "--batch", "1", "--steps", "1", "--warmup", "0", "--quiet", "--peak-tflops", "1"]));
        }
        finally
        {
            Console.SetOut(old);
        }
        var lines = stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.HasCount(1, lines);
        var j = JsonDocument.Parse(lines[0]).RootElement;
        Assert.AreEqual(16, j.GetProperty("seq_len").GetInt32());
        Assert.AreEqual(j.GetProperty("achieved_tflops").GetDouble(), j.GetProperty("mfu").GetDouble(), 1e-3, "mfu = achieved / peak with --peak-tflops 1");
    }

    [TestMethod]
    public void HalfPrecisionOnTheCpuIsAUserError()
    {
        var e = Assert.ThrowsExactly<UserError>(() => BenchRunner.Run(new BenchOptions { DType = DType.BFloat16, Steps = 1 }));
        StringAssert.Contains(e.Message, "float32");
    }

    [TestMethod]
    public void CudaGraphOnTheCpuOrWithDropoutIsAUserError()
    {
        var cpu = Assert.ThrowsExactly<UserError>(() => BenchRunner.Run(new BenchOptions { CudaGraph = true, Steps = 1 }));
        StringAssert.Contains(cpu.Message, "--device cuda");
        // checked before the CUDA provider is loaded, so this runs on a machine without a GPU
        var dropout = Assert.ThrowsExactly<UserError>(() => BenchRunner.Run(new BenchOptions { CudaGraph = true, Device = Runtime.Device.Cuda, Steps = 1 }));
        StringAssert.Contains(dropout.Message, "lora_dropout 0.05");
        StringAssert.Contains(dropout.Message, "lora_dropout 0 with --cuda-graph");
    }

    [TestMethod]
    public void ChunkedOptimizerTrainsExactlyAsOneChunk()
    {
        // no dropout (ORT's masks differ between sessions) and clipping on (the bench clips at 1.0): the
        // loss after two updates, with AdamW over 4,093-element chunks (a remainder chunk too), is bit-equal
        BenchResult Run(long chunk) => BenchRunner.Run(new BenchOptions
        {
            Config = "tiny", Adapter = new AdapterChoice("mixlora", R, 2 * R, E, K, Dropout: 0), SeqLen = T, Batch = B, Steps = 2, Warmup = 1, OptimizerChunk = chunk,
        });
        var whole = Run(ChunkedOptimizer.DefaultChunk);
        var chunked = Run(4093);
        Assert.AreNotEqual(0, whole.Parameters.Trainable % 4093, "the chunks should leave a remainder");
        Assert.IsTrue(double.IsFinite(whole.LastLoss), $"loss {whole.LastLoss}");           // NaN would compare equal
        Assert.AreEqual(whole.LastLoss, chunked.LastLoss, 0.0);
    }

    [TestMethod]
    public void JsonSaysWhetherStepsRanAsACudaGraph()
    {
        var j = Bench("lora");
        Assert.IsFalse(j.GetProperty("cuda_graph").GetBoolean());
    }

    [TestMethod]
    public void RandomWeightsAreSeededScaledAndTheSameStreamInEveryDtype()
    {
        var w = new RandomWeights(7);
        var f32 = w.Load("model.layers.0.mlp.up_proj.weight", DType.Float32, [300, 700]).Floats();
        var bf16 = w.Load("model.layers.0.mlp.up_proj.weight", DType.BFloat16, [300, 700]).Floats();
        CollectionAssert.AreEqual(f32, new RandomWeights(7).Load("model.layers.0.mlp.up_proj.weight", DType.Float32, [300, 700]).Floats());
        var other = new RandomWeights(7).Load("model.layers.1.mlp.up_proj.weight", DType.Float32, [300, 700]).Floats();
        Assert.AreNotEqual(f32[0], other[0]);
        var std = Math.Sqrt(f32.Average(x => (double)x * x));
        Assert.AreEqual(0.02, std, 0.001);
        Assert.AreEqual(0.0, f32.Average(x => (double)x), 0.001);
        for (var i = 0; i < f32.Length; i++) Assert.AreEqual(f32[i], bf16[i], Math.Abs(f32[i]) / 128, $"element {i}");
        Assert.IsTrue(w.Load("model.norm.weight", DType.Float16, [64]).Floats().All(x => x == 1f));
    }

    [TestMethod]
    public void PresetsHaveTheReferenceShapes()
    {
        var t = BenchModels.Resolve("tinyllama-1.1b").Model;
        Assert.AreEqual((2048, 5632, 22, 32, 4, 32000), (t.HiddenSize, t.IntermediateSize, t.NumLayers, t.NumHeads, t.NumKvHeads, t.VocabSize));
        var l = BenchModels.Resolve("llama2-7b").Model;
        Assert.AreEqual((4096, 11008, 32, 32, 32, 32000), (l.HiddenSize, l.IntermediateSize, l.NumLayers, l.NumHeads, l.NumKvHeads, l.VocabSize));
        Assert.ThrowsExactly<UserError>(() => BenchModels.Resolve("no-such-shape"));
    }
}
