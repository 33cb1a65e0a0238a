using System.Diagnostics;
using MixLoRA.Cli;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Tests.Fixtures;
using MixLoRA.Trainer.Tests.Training;

namespace MixLoRA.Trainer.Tests.Cli;

/// <summary>
/// A write the file system refuses at a checkpoint, the adapter or metrics.jsonl: one line `error: could not write
/// PATH: REASON: free space or choose another --out`, exit 1, and no half-written output (issue 17). The disk-full
/// case is real: the run folder is a 200 KiB tmpfs in a private mount namespace (`unshare -rm`), which the
/// parity model's first checkpoint (adapter 110 KB + AdamW moments 220 KB) overflows half-way.
/// </summary>
[TestClass]
[DoNotParallelize]
public sealed class WriteFaultTests
{
    private static string Artifacts => TrainFixture.Artifacts(micro: 2);

    private static string[] Train(string output, params string[] more) =>
        ["train", "--artifacts", Artifacts, "--data", TrainFixture.Data, "--out", output, "--quiet", "--batch-size", "2", .. more];

    [TestMethod]
    public void DiskFullAtACheckpointNamesItAndLeavesNoPartialCheckpoint()
    {
        var output = Path.Combine(TestFiles.TempDir(), "run");
        Directory.CreateDirectory(output);
        // in a private mount namespace: a tiny tmpfs on --out, the CLI, then what the folder holds (the mount dies with it)
        const string Script = "mount -t tmpfs -o size=200k tmpfs \"$0\" || exit 77; \"$@\"; rc=$?; echo '::listing'; find \"$0\" | sort; exit $rc";
        var psi = new ProcessStartInfo("unshare") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "-rm", "sh", "-c", Script, output, Environment.ProcessPath! }) psi.ArgumentList.Add(a);
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath) != Path.GetFileNameWithoutExtension(typeof(Commands).Assembly.Location))
            psi.ArgumentList.Add(typeof(Commands).Assembly.Location);
        foreach (var a in Train(output, "--steps", "3", "--save-steps", "1")) psi.ArgumentList.Add(a);
        Process p;
        try
        {
            p = Process.Start(psi)!;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            // CI runs on a machine kind that has util-linux and user namespaces: a missing one fails rather than passing silently
            Assert.Fail("needs unshare (util-linux) to mount a small tmpfs");
            return;
        }
        var (code, stdout, err) = ChildCli.Finish(p);
        if (code == 77) Assert.Fail($"no tmpfs in a user mount namespace here (needed to fill a disk for real): {err}");

        var checkpoint = Path.Combine(output, "checkpoints", "step-1");
        Assert.AreEqual(1, code, $"{err}\n{stdout}");
        Assert.AreEqual(1, err.Trim().Split('\n').Length, $"one line:\n{err}");
        Assert.AreEqual($"error: could not write {checkpoint}: no space left on device (disk full?): free space or choose another --out", err.Trim());
        var listing = stdout[(stdout.IndexOf("::listing", StringComparison.Ordinal) + 9)..].Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.IsFalse(listing.Any(f => f.Contains("step-", StringComparison.Ordinal)), "no checkpoint, complete or not, and no step-1.tmp:\n" + string.Join("\n", listing));
        Assert.IsFalse(listing.Any(f => f.EndsWith(".tmp", StringComparison.Ordinal)), "no temporary file:\n" + string.Join("\n", listing));
        Assert.Contains(Path.Combine(output, "metrics.jsonl"), listing, "the steps before it were recorded");
    }

    /// <summary>The final adapter is written beside OUT/adapter and renamed: a refused write leaves no OUT/adapter at all.</summary>
    [TestMethod]
    public void ARefusedAdapterWriteNamesItAndLeavesNoAdapter()
    {
        var output = Path.Combine(TestFiles.TempDir(), "run");
        Directory.CreateDirectory(output);
        // a file where the adapter's temporary folder goes (this process runs the CLI in-process): creating it fails
        var blocker = Path.Combine(output, $"adapter.tmp-{Environment.ProcessId}");
        File.WriteAllText(blocker, "in the way");
        var (code, err) = CliCapture.Run(Train(output, "--steps", "2"));
        var adapter = Path.Combine(output, "adapter");
        Assert.AreEqual(1, code, err);
        Assert.AreEqual(1, err.Trim().Split('\n').Length, $"one line:\n{err}");
        StringAssert.StartsWith(err, $"error: could not write {adapter}: ");
        StringAssert.EndsWith(err.Trim(), "free space or choose another --out");
        Assert.IsFalse(Directory.Exists(adapter), "no adapter folder");
        Assert.IsEmpty(Directory.GetDirectories(output, "adapter*"), "no temporary adapter folder");
        Assert.IsTrue(Directory.Exists(Path.Combine(output, "checkpoints", "step-2")), "the final checkpoint came first and is complete");
    }

    [TestMethod]
    public void TheReasonOfARefusedWrite()
    {
        var full = new IOException("No space left on device : '/x'", 28);
        StringAssert.Contains(MixLoRA.GraphBuilder.Fail.Write("/out/adapter", full).Message, "could not write /out/adapter: no space left on device (disk full?)");
        var denied = MixLoRA.GraphBuilder.Fail.Write("/out/metrics.jsonl", new UnauthorizedAccessException("Access to the path is denied."));
        StringAssert.Contains(denied.Message, "permission denied");
        var nested = MixLoRA.GraphBuilder.Fail.Write("/out/checkpoints/step-3", MixLoRA.GraphBuilder.Fail.Write("/out/checkpoints/step-3.tmp/state.json", full));
        StringAssert.StartsWith(nested.Message, "could not write /out/checkpoints/step-3: no space left", "the outer path is named, the I/O reason kept");
    }
}
