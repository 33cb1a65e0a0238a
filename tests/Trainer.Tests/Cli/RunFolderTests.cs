using System.Diagnostics;
using MixLoRA.Cli;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Tests.Fixtures;

namespace MixLoRA.Trainer.Tests.Cli;

/// <summary>
/// A run folder belongs to one process, a finished run is not overwritten by accident, and SIGTERM stops a run
/// with a checkpoint from which --resume reaches the uninterrupted run's adapter bit for bit.
/// </summary>
[TestClass]
[DoNotParallelize]
public sealed class RunFolderTests
{
    private static string Parity => TestFiles.Parity("llama-basic") ?? throw new AssertFailedException("shared/parity/llama-basic not found");

    private static string Artifacts()
    {
        var artifacts = Path.Combine(TestFiles.TempDir(), "artifacts");
        Assert.AreEqual(0, Commands.Run(["build-graph", "--model", Path.Combine(Parity, "model"), "--adapter", Path.Combine(Parity, "adapter_init"),
            "--out", artifacts, "--seq-len", "64", "--micro-batch-size", "2"]));
        return artifacts;
    }

    private static string[] Train(string artifacts, string output, int steps) =>
        ["train", "--artifacts", artifacts, "--data", Path.Combine(Parity, "data.jsonl"), "--out", output, "--batch-size", "2",
         "--steps", steps.ToString(System.Globalization.CultureInfo.InvariantCulture), "--lr", "0.001", "--quiet"];

    private static Process Start(string[] args) => ChildCli.Start(args);

    private static (int Code, string Err) Finish(Process p)
    {
        var (code, _, err) = ChildCli.Finish(p);
        return (code, err);
    }

    private static byte[] Adapter(string run) => File.ReadAllBytes(Path.Combine(run, "adapter", "adapter_model.safetensors"));

    [TestMethod]
    public void TwoTrainingsOnOneFolderOneWinsTheOtherSaysWhy()
    {
        var artifacts = Artifacts();
        var work = TestFiles.TempDir();
        var (shared, solo) = (Path.Combine(work, "shared"), Path.Combine(work, "solo"));
        using var a = Start(Train(artifacts, shared, 60));
        using var b = Start(Train(artifacts, shared, 60));
        var results = new[] { Finish(a), Finish(b) };
        Assert.AreEqual(1, results.Count(r => r.Code == 0), string.Join("\n", results.Select(r => $"{r.Code}: {r.Err}")));
        var loser = results.Single(r => r.Code != 0);
        Assert.AreEqual(1, loser.Code, loser.Err);
        StringAssert.Contains(loser.Err, shared);
        Assert.AreEqual(1, loser.Err.Trim().Split('\n').Length, $"one line, no stack trace:\n{loser.Err}");
        Assert.AreEqual(0, Commands.Run(Train(artifacts, solo, 60)));
        CollectionAssert.AreEqual(Adapter(solo), Adapter(shared), "the winner's adapter is a solo run's");
        Assert.IsFalse(File.Exists(Path.Combine(shared, ".lock")), "the lock goes with its owner");
    }

    [TestMethod]
    public void ANewRunIntoAFinishedOneRefusesUnlessOverwrite()
    {
        var artifacts = Artifacts();
        var run = Path.Combine(TestFiles.TempDir(), "run");
        Assert.AreEqual(0, Commands.Run(Train(artifacts, run, 3)));
        var before = Adapter(run);
        var (code, err) = Finish(Start(Train(artifacts, run, 4)));
        Assert.AreEqual(1, code, err);
        StringAssert.Contains(err, "--overwrite");
        CollectionAssert.AreEqual(before, Adapter(run), "a refused run changes nothing");
        Assert.AreEqual(0, Commands.Run([.. Train(artifacts, run, 4), "--overwrite"]));
        Assert.HasCount(4, File.ReadAllLines(Path.Combine(run, "metrics.jsonl")));
        Assert.IsFalse(Directory.Exists(Path.Combine(run, "checkpoints", "step-3")), "--overwrite cleared the old run's checkpoints");
    }

    [TestMethod]
    public void SigtermCheckpointsAndResumeReachesTheUninterruptedAdapter()
    {
        const int steps = 1500;
        var artifacts = Artifacts();
        var work = TestFiles.TempDir();
        var (stopped, whole) = (Path.Combine(work, "stopped"), Path.Combine(work, "whole"));
        using var p = Start(Train(artifacts, stopped, steps));
        var metrics = Path.Combine(stopped, "metrics.jsonl");
        var clock = Stopwatch.StartNew();
        while (!(File.Exists(metrics) && Lines(metrics) >= 5) && !p.HasExited && clock.Elapsed < TimeSpan.FromSeconds(60)) Thread.Sleep(10);
        Assert.IsFalse(p.HasExited, "the run ended before it could be signalled");
        using (var kill = Process.Start("kill", ["-TERM", p.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])) kill.WaitForExit();
        var (code, err) = Finish(p);
        Assert.AreEqual(143, code, err);
        var checkpoints = Directory.GetDirectories(Path.Combine(stopped, "checkpoints"));
        Assert.HasCount(1, checkpoints);
        var at = int.Parse(Path.GetFileName(checkpoints[0])["step-".Length..], System.Globalization.CultureInfo.InvariantCulture);
        Assert.IsTrue(at is >= 5 and < steps, $"checkpoint at step {at}");
        Assert.IsFalse(File.Exists(Path.Combine(stopped, "adapter", "adapter_model.safetensors")), "no final adapter for a stopped run");

        Assert.AreEqual(0, Commands.Run([.. Train(artifacts, stopped, steps), "--resume"]));
        Assert.AreEqual(0, Commands.Run(Train(artifacts, whole, steps)));
        CollectionAssert.AreEqual(Adapter(whole), Adapter(stopped), "resumed after SIGTERM = uninterrupted, bit for bit");
    }

    private static int Lines(string file)
    {
        using var s = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var r = new StreamReader(s);
        return r.ReadToEnd().Count(c => c == '\n');
    }
}
