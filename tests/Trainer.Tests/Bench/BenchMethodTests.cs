using System.Text.Json;
using MixLoRA.Cli.Bench;
using MixLoRA.Trainer.Tests.Fixtures;

namespace MixLoRA.Trainer.Tests.Bench;

/// <summary>
/// mixlora-bench --method for issue 22's methods on the tiny shape (8 experts, top-2, r 16, all 7 targets): one step each,
/// a finite loss, and trainable (and active) parameter counts equal to a count from the sizes: mixlora-switch as MixLoRA
/// with one active expert; LoRAMoE E LoRA pairs and a router on each MLP projection, LoRA on attention (all active);
/// MoLA E pairs and a router on every projection (top-2 of 8 active); HydraLoRA one A, E B heads and a router on every
/// projection (all active).
/// </summary>
[TestClass]
public sealed class BenchMethodTests
{
    private const int D = 64, F = 160, L = 2, Q = 64, Kv = 32, R = 16, E = 8, K = 2;

    private static readonly (long In, long Out)[] Attention = [(D, Q), (D, Kv), (D, Kv), (Q, D)];
    private static readonly (long In, long Out)[] Mlp = [(D, F), (D, F), (F, D)];

    [TestMethod]
    [DataRow("mixlora-switch")]
    [DataRow("loramoe")]
    [DataRow("mola")]
    [DataRow("hydralora")]
    public void EachMethodBenchesWithItsParameterCounts(string method)
    {
        var o = new BenchOptions { Config = "tiny", Adapter = new AdapterChoice(method, R, 2 * R, E, K), SeqLen = 16, Batch = 1, Steps = 1, Warmup = 0 };
        var j = JsonDocument.Parse(BenchRunner.Run(o).ToJson()).RootElement;
        Assert.AreEqual(method, j.GetProperty("method").GetString());
        Assert.IsTrue(double.IsFinite(j.GetProperty("last_loss").GetDouble()));
        Assert.AreEqual(E, j.GetProperty("experts").GetInt32());
        static long Lora((long In, long Out) p) => R * (p.In + p.Out);
        var (trainable, active) = method switch
        {
            "mixlora-switch" => Sum(Attention.Sum(Lora) + (E * D), Mlp.Sum(p => E * Lora(p)), 1.0 / E),
            "loramoe" => Sum(Attention.Sum(Lora) + Mlp.Sum(p => E * p.In), Mlp.Sum(p => E * Lora(p)), 1),
            "mola" => Sum(Attention.Concat(Mlp).Sum(p => E * p.In), Attention.Concat(Mlp).Sum(p => E * Lora(p)), (double)K / E),
            _ => Sum(Attention.Concat(Mlp).Sum(p => (E * p.In) + (R * p.In) + (E * R * p.Out)), 0, 1),
        };
        Assert.AreEqual(trainable, j.GetProperty("trainable_params").GetInt64(), "trainable");
        Assert.AreEqual(active, j.GetProperty("trainable_params_active").GetInt64(), "active");
    }

    /// <summary>Per-layer shared and expert parameters over L layers: (all, active with the experts' share).</summary>
    private static (long, long) Sum(long shared, long experts, double share) => (L * (shared + experts), L * (shared + (long)Math.Round(experts * share)));

    [TestMethod]
    [DoNotParallelize]
    public void AnUnknownMethodIsRefused()
    {
        var (code, err) = CliCapture.Run("bench", "--method", "moe", "--steps", "1", "--quiet");
        Assert.AreNotEqual(0, code);
        StringAssert.Contains(err, "'mixlora-switch'");
    }
}
