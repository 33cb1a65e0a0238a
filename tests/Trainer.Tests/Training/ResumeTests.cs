using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Trainer.Tests.Training;

/// <summary>
/// Issue 5 item 3: N steps, a stop, `--resume` and M more steps give the same adapter, optimizer moments and
/// metrics bit for bit as N+M uninterrupted steps (CPU), across an epoch boundary (shuffled data), with
/// gradient accumulation, clipping and a warmup + cosine schedule; a leftover `step-K.tmp/` is ignored.
/// </summary>
[TestClass]
public sealed class ResumeTests
{
    private const int Total = 7; // 6 records, batch 2: 3 steps per epoch

    private static readonly Lazy<string> Uninterrupted = new(() => Train(null, o => o));

    private static TrainOptions Options(string output) =>
        TrainFixture.Options(TrainFixture.Artifacts(micro: 1), output, Total) with
        {
            LrScheduler = "cosine", WarmupSteps = 2, MaxGradNorm = 1.0, WeightDecay = 0.01, Seed = 5,
        };

    private static string Train(string? output, Func<TrainOptions, TrainOptions> change)
    {
        output ??= Path.Combine(TestFiles.TempDir(), "run");
        TrainLoop.Run(change(Options(output)), TextWriter.Null);
        return output;
    }

    [TestMethod]
    public void StopAndResumeEqualsUninterrupted()
    {
        var output = Train(null, o => o with { StopAfter = 4 });
        Assert.IsFalse(Directory.Exists(Path.Combine(output, "adapter")), "a stopped run must not write the final adapter");
        Assert.AreEqual(Path.Combine(output, "checkpoints", "step-4"), Checkpoints.Latest(output));
        Train(output, o => o with { Resume = true });
        AssertSameRun(Uninterrupted.Value, output);
    }

    [TestMethod]
    public void LeftoverTmpCheckpointIsIgnoredAndLaterMetricsAreReplaced()
    {
        var output = Train(null, o => o with { StopAfter = 5, SaveSteps = 3 });
        var checkpoints = Path.Combine(output, "checkpoints");
        // a crash while step 5 was being saved: its folder never lost the .tmp suffix
        Directory.Move(Path.Combine(checkpoints, "step-5"), Path.Combine(checkpoints, "step-5.tmp"));
        Assert.AreEqual(Path.Combine(checkpoints, "step-3"), Checkpoints.Latest(output));
        Assert.HasCount(5, TrainFixture.Losses(output), "metrics of steps 0..4 were written before the crash");
        File.AppendAllText(Path.Combine(output, "metrics.jsonl"), "{\"step\": 5, \"lm_lo"); // and a line cut short
        Train(output, o => o with { Resume = true, SaveSteps = 3 });
        AssertSameRun(Uninterrupted.Value, output);
    }

    [TestMethod]
    public void ResumeWithAnotherSeedIsRefused()
    {
        var output = Train(null, o => o with { StopAfter = 1 });
        var e = Assert.ThrowsExactly<GraphBuilder.UserError>(() => Train(output, o => o with { Resume = true, Seed = 6 }));
        StringAssert.Contains(e.Message, "--seed 5");
    }

    private static void AssertSameRun(string want, string got)
    {
        TrainFixture.AssertSameBits(AdapterWeights.Load(Path.Combine(want, "adapter")), AdapterWeights.Load(Path.Combine(got, "adapter")));
        var (a, b) = (Path.Combine(want, "checkpoints", $"step-{Total}"), Path.Combine(got, "checkpoints", $"step-{Total}"));
        CollectionAssert.AreEqual(File.ReadAllBytes(Path.Combine(a, "optimizer.safetensors")), File.ReadAllBytes(Path.Combine(b, "optimizer.safetensors")), "AdamW moments");
        Assert.AreEqual(File.ReadAllText(Path.Combine(a, "state.json")), File.ReadAllText(Path.Combine(b, "state.json")), "step, data position and schedule");
        var (mw, mg) = (TrainFixture.Metrics(want), TrainFixture.Metrics(got));
        CollectionAssert.AreEqual(Enumerable.Range(0, Total).ToArray(), mg.Select(e => e.GetProperty("step").GetInt32()).ToArray(), "one metrics line per step, none duplicated");
        for (var k = 0; k < Total; k++)
        {
            foreach (var key in new[] { "lm_loss", "aux_loss", "loss", "lr", "grad_norm", "tokens" })
                Assert.AreEqual(mw[k].GetProperty(key).GetRawText(), mg[k].GetProperty(key).GetRawText(), $"step {k} {key}");
        }
    }
}
