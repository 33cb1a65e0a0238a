using System.Diagnostics;
using System.Globalization;
using MixLoRA.Cli;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Tests.Fixtures;
using MixLoRA.Trainer.Tests.Training;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Trainer.Tests.Distributed;

/// <summary>
/// Data parallelism on the CPU (TCP collective) through the CLI, with real child processes: `--nproc N` on the parity
/// model gives the single-process run's losses and adapter within 1e-5 (the sum's order differs, so not bit for bit),
/// with gradient accumulation and with a rank that has no micro-batch; a run resumes with another number of ranks; a
/// killed rank stops the others with one `error:` line and leaves the last checkpoint loadable; SIGTERM to the
/// launcher stops every rank at the same step with a checkpoint; the rendezvous timeout names the address.
/// </summary>
[TestClass]
[DoNotParallelize]
public sealed class DataParallelTrainingTests
{
    private const double Tolerance = 1e-5;

    /// <summary>Graphs of micro-batch 1: a batch of B records is B micro-batches, spread over the ranks.</summary>
    private static string Artifacts => TrainFixture.Artifacts(micro: 1);

    private static string[] Train(string output, int batch, int steps, params string[] more) =>
        ["train", "--artifacts", Artifacts, "--data", TrainFixture.Data, "--out", output, "--batch-size", N(batch), "--steps", N(steps),
         "--lr", "0.01", "--weight-decay", "0.01", "--max-grad-norm", "1.0", "--seed", "3", "--quiet", .. more];

    private static string N(int n) => n.ToString(CultureInfo.InvariantCulture);

    private static (int Code, string Out, string Err) Child(string[] args, IReadOnlyDictionary<string, string?>? env = null) => ChildCli.Finish(ChildCli.Start(args, env));

    private static string Single(int batch, int steps)
    {
        var output = Path.Combine(TestFiles.TempDir(), "single");
        Assert.AreEqual(0, Commands.Run(Train(output, batch, steps)));
        return output;
    }

    [TestMethod]
    [DataRow(2, 4, DisplayName = "2 ranks, 4 micro-batches a step (accumulation: 2 each)")]
    [DataRow(3, 2, DisplayName = "3 ranks, 2 micro-batches a step (rank 2 idle)")]
    public void NprocGivesTheSingleProcessLossesAndAdapter(int nproc, int batch)
    {
        const int Steps = 6;
        var single = Single(batch, Steps);
        var output = Path.Combine(TestFiles.TempDir(), "dp");
        var r = Child([.. Train(output, batch, Steps), "--nproc", N(nproc)]);
        Assert.AreEqual(0, r.Code, r.Err);
        AssertSameTraining(single, output, Steps);
        CollectionAssert.AreEquivalent(new[] { "adapter", "checkpoints", "metrics.jsonl" }, Directory.EnumerateFileSystemEntries(output).Select(Path.GetFileName).ToArray(), "rank 0 alone writes, and leaves no lock");
        Assert.HasCount(1, Directory.GetDirectories(Path.Combine(output, "checkpoints")));
    }

    [TestMethod]
    public void ARunResumesWithAnotherNumberOfRanks()
    {
        var single = Single(4, 6);
        var work = TestFiles.TempDir();
        var (twoThenOne, oneThenTwo) = (Path.Combine(work, "2-1"), Path.Combine(work, "1-2"));
        var first = Child([.. Train(twoThenOne, 4, 3), "--nproc", "2"]);
        Assert.AreEqual(0, first.Code, first.Err);
        Assert.AreEqual(0, Commands.Run([.. Train(twoThenOne, 4, 6), "--resume"]));
        AssertSameTraining(single, twoThenOne, 6);
        Assert.AreEqual(0, Commands.Run(Train(oneThenTwo, 4, 3)));
        var second = Child([.. Train(oneThenTwo, 4, 6), "--resume", "--nproc", "2"]);
        Assert.AreEqual(0, second.Code, second.Err);
        AssertSameTraining(single, oneThenTwo, 6);
    }

    [TestMethod]
    public void AKilledRankStopsTheOthersAndLeavesTheLastCheckpoint()
    {
        var output = Path.Combine(TestFiles.TempDir(), "killed");
        using var launcher = ChildCli.Start([.. Train(output, 4, 5000, "--save-steps", "5"), "--nproc", "3"]);
        var checkpoints = Path.Combine(output, "checkpoints");
        var clock = Stopwatch.StartNew();
        while (!Directory.Exists(Path.Combine(checkpoints, "step-10")) && !launcher.HasExited && clock.Elapsed < TimeSpan.FromSeconds(120)) Thread.Sleep(50);
        Assert.IsFalse(launcher.HasExited, "the run ended before a rank could be killed");
        var rank1 = Ranks(launcher.Id)[1];
        using (var kill = Process.Start("kill", ["-KILL", N(rank1)])) kill.WaitForExit();
        clock.Restart();
        var (code, _, err) = ChildCli.Finish(launcher);
        Assert.IsLessThan(20.0, clock.Elapsed.TotalSeconds, "the other ranks stop on their own, well before the launcher's grace");
        Assert.AreEqual(137, code, err);
        var errors = err.Split('\n').Where(l => l.StartsWith("error:", StringComparison.Ordinal)).ToArray();
        CollectionAssert.AreEqual(new[] { "error: rank 1 was killed by signal 9; the other ranks stopped with it" }, errors, err);
        Assert.DoesNotContain("   at ", err, "no stack trace");
        var latest = Checkpoints.Latest(output)!;
        var step = int.Parse(Path.GetFileName(latest)["step-".Length..], CultureInfo.InvariantCulture);
        Assert.IsGreaterThanOrEqualTo(10, step);
        var (info, adapter, m, v) = Checkpoints.Load(latest);
        Assert.AreEqual(step, info.Step);
        Assert.IsTrue(adapter.Values.Concat(m.Values).Concat(v.Values).All(t => t.Data.All(float.IsFinite)));
        Assert.AreEqual(0, Commands.Run([.. Train(output, 4, step + 2), "--resume"]), "one process continues from it");
    }

    [TestMethod]
    public void SigtermToTheLauncherStopsEveryRankAtOneStepWithACheckpoint()
    {
        var output = Path.Combine(TestFiles.TempDir(), "stopped");
        using var launcher = ChildCli.Start([.. Train(output, 4, 5000), "--nproc", "2"]);
        var metrics = Path.Combine(output, "metrics.jsonl");
        var clock = Stopwatch.StartNew();
        while (!(File.Exists(metrics) && Lines(metrics) >= 5) && !launcher.HasExited && clock.Elapsed < TimeSpan.FromSeconds(120)) Thread.Sleep(20);
        Assert.IsFalse(launcher.HasExited, "the run ended before it could be signalled");
        using (var term = Process.Start("kill", ["-TERM", N(launcher.Id)])) term.WaitForExit();
        var (code, _, err) = ChildCli.Finish(launcher);
        Assert.AreEqual(143, code, err);
        Assert.DoesNotContain("error:", err);
        var latest = Checkpoints.Latest(output)!;
        var step = int.Parse(Path.GetFileName(latest)["step-".Length..], CultureInfo.InvariantCulture);
        Assert.AreEqual(step, Lines(metrics), "the checkpoint is at the step every rank stopped after");
    }

    [TestMethod]
    public void ARendezvousTimeoutNamesTheAddress()
    {
        var port = N(TcpCollectiveTests.FreePort());
        var env = new Dictionary<string, string?> { ["RANK"] = "0", ["WORLD_SIZE"] = "2", ["LOCAL_RANK"] = "0", ["MASTER_ADDR"] = "127.0.0.1", ["MASTER_PORT"] = port };
        var output = Path.Combine(TestFiles.TempDir(), "alone");
        var r = Child([.. Train(output, 4, 2), "--rendezvous-timeout", "1"], env);
        Assert.AreEqual(1, r.Code, r.Err);
        Assert.AreEqual($"error: the rendezvous at 127.0.0.1:{port} timed out after 1 s: rank 1 of 2 did not join: start them with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE (did one fail to start? see its output), or raise --rendezvous-timeout",
            r.Err.Trim());
    }

    [TestMethod]
    public void BenchNprocReportsTheGroupsThroughputAndScaling()
    {
        var r = Child(["bench", "--config", "tiny", "--steps", "2", "--warmup", "1", "--quiet", "--nproc", "2"]);
        Assert.AreEqual(0, r.Code, r.Err);
        var lines = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.HasCount(1, lines, "rank 0 alone prints the line");
        var json = System.Text.Json.JsonDocument.Parse(lines[0]).RootElement;
        Assert.AreEqual(2, json.GetProperty("world_size").GetInt32());
        Assert.AreEqual(2 * 4 * 128, json.GetProperty("tokens_per_step").GetInt64(), "every rank's rows");
        Assert.IsGreaterThan(0.0, json.GetProperty("solo_tokens_per_s").GetDouble());
        var efficiency = json.GetProperty("scaling_efficiency").GetDouble();
        Assert.AreEqual(json.GetProperty("tokens_per_s").GetDouble() / (2 * json.GetProperty("solo_tokens_per_s").GetDouble()), efficiency, 1e-3);
    }

    /// <summary>Per-step losses and gradient norms within <see cref="Tolerance"/> relative, the same token counts, and the final adapter within it (relative L2).</summary>
    private static void AssertSameTraining(string want, string got, int steps)
    {
        var (a, b) = (TrainFixture.Metrics(want), TrainFixture.Metrics(got));
        Assert.HasCount(steps, b);
        for (var k = 0; k < steps; k++)
        {
            Assert.AreEqual(k, b[k].GetProperty("step").GetInt32());
            Assert.AreEqual(a[k].GetProperty("tokens").GetInt64(), b[k].GetProperty("tokens").GetInt64(), $"step {k} tokens");
            foreach (var key in new[] { "loss", "lm_loss", "aux_loss", "grad_norm" })
            {
                var (x, y) = (a[k].GetProperty(key).GetDouble(), b[k].GetProperty(key).GetDouble());
                Assert.IsLessThanOrEqualTo(Tolerance, Math.Abs(x - y) / Math.Abs(x), $"step {k} {key}: {x} vs {y}");
            }
        }
        var (wa, wb) = (AdapterWeights.Load(Path.Combine(want, "adapter")), AdapterWeights.Load(Path.Combine(got, "adapter")));
        CollectionAssert.AreEquivalent(wa.Keys.ToArray(), wb.Keys.ToArray());
        double num = 0, den = 0;
        foreach (var key in wa.Keys)
        {
            for (var i = 0; i < wa[key].Data.Length; i++)
            {
                var d = (double)wa[key].Data[i] - wb[key].Data[i];
                (num, den) = (num + (d * d), den + ((double)wa[key].Data[i] * wa[key].Data[i]));
            }
        }
        Assert.IsLessThanOrEqualTo(Tolerance, Math.Sqrt(num / den), "adapter relative L2");
    }

    /// <summary>The launcher's children by rank (Linux: /proc).</summary>
    private static int[] Ranks(int launcher)
    {
        var ranks = new SortedDictionary<int, int>();
        foreach (var dir in Directory.GetDirectories("/proc").Where(d => int.TryParse(Path.GetFileName(d), out _)))
        {
            try
            {
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                var ppid = int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1], CultureInfo.InvariantCulture);
                if (ppid != launcher) continue;
                var rank = File.ReadAllText(Path.Combine(dir, "environ")).Split('\0').First(v => v.StartsWith("RANK=", StringComparison.Ordinal));
                ranks[int.Parse(rank["RANK=".Length..], CultureInfo.InvariantCulture)] = int.Parse(Path.GetFileName(dir), CultureInfo.InvariantCulture);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException)
            {
                // a process that ended meanwhile, or not ours
            }
        }
        return [.. ranks.Values];
    }

    private static int Lines(string file)
    {
        using var s = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var r = new StreamReader(s);
        return r.ReadToEnd().Count(c => c == '\n');
    }
}
