using System.Text.Json;
using MixLoRA.Cli;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.Trainer.Tests.Data;

namespace MixLoRA.Trainer.Tests.Training;

/// <summary>
/// Issue 4's check: mixlora-build-graph + mixlora-train with train.json's settings reproduce the reference
/// run's per-step losses and final adapter (relative L2 over all tensors together), with stored activations
/// with --gradient-checkpointing (recomputed layers), and with --packing (issue 19: both records of a step in one row).
/// </summary>
[TestClass]
public sealed class TrainParityTests
{
    [TestMethod]
    [DataRow(false, false)]
    [DataRow(true, false)]
    [DataRow(false, true)]
    public void ThreeStepsMatchTheReference(bool checkpointing, bool packing)
    {
        var dir = TestFiles.Parity("llama-basic") ?? throw new AssertFailedException("shared/parity/llama-basic not found");
        var work = TestFiles.TempDir();
        var artifacts = Path.Combine(work, "artifacts");
        var output = Path.Combine(work, "run");
        string[] build = ["build-graph", "--model", Path.Combine(dir, "model"), "--adapter", Path.Combine(dir, "adapter_init"),
            "--out", artifacts, "--seq-len", "64", "--micro-batch-size", "2", "--dtype", "float32", "--device", "cpu"];
        Assert.AreEqual(0, Commands.Run(checkpointing ? [.. build, "--gradient-checkpointing"] : build));
        string[] train = ["train", "--artifacts", artifacts, "--data", Path.Combine(dir, "data.jsonl"), "--out", output,
            "--batch-size", "2", "--micro-batch-size", "2", "--steps", "3", "--lr", "0.01", "--weight-decay", "0.01",
            "--lr-scheduler", "constant", "--no-shuffle", "--quiet"];
        Assert.AreEqual(0, Commands.Run(packing ? [.. train, "--packing"] : train));    // packed: each step's 2 records share one row

        var expected = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "expected", "losses.json"))).RootElement;
        var lines = File.ReadAllLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.HasCount(3, lines);
        for (var k = 0; k < 3; k++)
        {
            Assert.AreEqual(k, lines[k].GetProperty("step").GetInt32());
            foreach (var key in new[] { "lm_loss", "aux_loss", "loss" })
            {
                var want = expected[k].GetProperty(key).GetDouble();
                Assert.AreEqual(want, lines[k].GetProperty(key).GetDouble(), 1e-4 * Math.Abs(want), $"step {k} {key}");
            }
        }

        var want2 = AdapterWeights.Load(Path.Combine(dir, "expected", "adapter_final"));
        var got = AdapterWeights.Load(Path.Combine(output, "adapter"));
        CollectionAssert.AreEquivalent(want2.Keys.ToArray(), got.Keys.ToArray());
        double diff = 0, norm = 0;
        foreach (var k in want2.Keys)
        {
            var (a, b) = (want2[k].Data, got[k].Data);
            for (var i = 0; i < a.Length; i++) (diff, norm) = (diff + ((a[i] - b[i]) * (double)(a[i] - b[i])), norm + (a[i] * (double)a[i]));
        }
        var rel = Math.Sqrt(diff / norm);
        Assert.IsLessThanOrEqualTo(1e-4, rel, $"relative L2 distance of the final adapter: {rel:G3}");
    }
}
