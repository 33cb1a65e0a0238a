using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.Cli;
using MixLoRA.Trainer.Tests.Data;

namespace MixLoRA.Trainer.Tests.Model;

/// <summary>
/// A model laid out as the Hugging Face cache lays out every model: snapshots/REV/FILE are symbolic links to
/// ../../blobs/SHA. Sizes, maps and fingerprints are the targets'; build-graph, train and score run from it.
/// </summary>
[TestClass]
public sealed class HfCacheLayoutTests
{
    /// <summary>models--org--name/{blobs,snapshots/rev} holding the parity model, every file a relative link.</summary>
    internal static string CacheLayout(string modelDir, string root)
    {
        var repo = Path.Combine(root, "models--test--tiny");
        var (blobs, snapshot) = (Path.Combine(repo, "blobs"), Path.Combine(repo, "snapshots", "0123abcd"));
        Directory.CreateDirectory(blobs);
        Directory.CreateDirectory(snapshot);
        var n = 0;
        foreach (var file in Directory.GetFiles(modelDir))
        {
            var blob = $"sha{n++:D4}";
            File.Copy(file, Path.Combine(blobs, blob));
            File.CreateSymbolicLink(Path.Combine(snapshot, Path.GetFileName(file)), Path.Combine("..", "..", "blobs", blob));
        }
        return snapshot;
    }

    [TestMethod]
    public void ASymlinkedModelLoadsTrainsAndScores()
    {
        var dir = TestFiles.Parity("llama-basic") ?? throw new AssertFailedException("shared/parity/llama-basic not found");
        var work = TestFiles.TempDir();
        var snapshot = CacheLayout(Path.Combine(dir, "model"), work);
        var link = Path.Combine(snapshot, "model.safetensors");
        Assert.IsNotNull(new FileInfo(link).LinkTarget, "the fixture should be a symbolic link");

        using (var f = new SafetensorsFile(link))
        {
            Assert.AreEqual(new FileInfo(Path.Combine(dir, "model", "model.safetensors")).Length, f.FileLength);
        }
        Assert.AreEqual(ModelConfig.Fingerprint(Path.Combine(dir, "model")), ModelConfig.Fingerprint(snapshot));

        var (artifacts, run) = (Path.Combine(work, "artifacts"), Path.Combine(work, "run"));
        Assert.AreEqual(0, Commands.Run(["build-graph", "--model", snapshot, "--adapter", Path.Combine(dir, "adapter_init"),
            "--out", artifacts, "--seq-len", "64", "--micro-batch-size", "2"]));
        Assert.AreEqual(0, Commands.Run(["train", "--artifacts", artifacts, "--data", Path.Combine(dir, "data.jsonl"), "--out", run,
            "--batch-size", "2", "--steps", "2", "--lr", "0.01", "--no-shuffle", "--quiet"]));
        Assert.IsTrue(File.Exists(Path.Combine(run, "adapter", "adapter_model.safetensors")));
        Assert.AreEqual(0, Commands.Run(["score", "--model", snapshot, "--data", Path.Combine(dir, "data.jsonl"), "--out", Path.Combine(work, "s.safetensors")]));
    }

    [TestMethod]
    public void ADanglingLinkSaysSo()
    {
        var work = TestFiles.TempDir();
        var link = Path.Combine(work, "model.safetensors");
        File.CreateSymbolicLink(link, Path.Combine(work, "gone"));
        var e = Assert.ThrowsExactly<GraphBuilder.UserError>(() => LinkedFile.Length(link));
        StringAssert.Contains(e.Message, "does not exist");
    }
}
