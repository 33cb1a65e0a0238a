using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using MixLoRA.Cli;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Tests.Model;

namespace MixLoRA.Trainer.Tests.Cli;

/// <summary>`mixlora-score` in process: the reference's logits and loss, with and without an adapter.</summary>
[TestClass]
[DoNotParallelize]
public sealed partial class ScoreCommandTests
{
    private static string Dir => TestFiles.Parity("llama-basic") ?? throw new AssertFailedException("shared/parity/llama-basic not found");

    [TestMethod]
    public void ReproducesTheReferenceBaseLogitsAndPrintsTheLoss()
    {
        using var tmp = new TempDir();
        var outFile = Path.Combine(tmp.Path, "x.safetensors");
        var data = Path.Combine(Dir, "data.jsonl");
        var (rc, stdout, stderr) = Cli.Run(["score", "--model", Path.Combine(Dir, "model"), "--data", data, "--out", outFile]);
        Assert.AreEqual(0, rc, stderr);
        var expectedFile = Path.Combine(Dir, "expected", "logits_base.safetensors");
        AssertSameLogits(expectedFile, outFile);
        Assert.HasCount(1, Directory.GetFiles(tmp.Path), "no temp file left beside --out");

        using var expected = new SafetensorsFile(expectedFile);
        var shape = expected.Info("logits").Shape;
        var want = ReferenceLoss(expected.ReadFloat32("logits"), Labels(data, (int)shape[1]), (int)shape[0], (int)shape[1], (int)shape[2]);
        var printed = double.Parse(LossPattern().Match(stdout).Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.AreEqual(want, printed, 1e-4 * want, stdout);
        var ppl = double.Parse(PerplexityPattern().Match(stdout).Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.AreEqual(Math.Exp(want), ppl, 1e-4 * Math.Exp(want), stdout);
    }

    [TestMethod]
    public void WithTheFinalAdapterReproducesTheReferenceFinalLogits()
    {
        using var tmp = new TempDir();
        var outFile = Path.Combine(tmp.Path, "final.safetensors");
        var (rc, _, stderr) = Cli.Run(["score", "--model", Path.Combine(Dir, "model"), "--adapter", Path.Combine(Dir, "expected", "adapter_final"),
            "--data", Path.Combine(Dir, "data.jsonl"), "--out", outFile]);
        Assert.AreEqual(0, rc, stderr);
        AssertSameLogits(Path.Combine(Dir, "expected", "logits_final.safetensors"), outFile);
    }

    private static void AssertSameLogits(string expectedFile, string gotFile)
    {
        using var expected = new SafetensorsFile(expectedFile);
        using var got = new SafetensorsFile(gotFile);
        CollectionAssert.AreEqual(expected.Info("logits").Shape, got.Info("logits").Shape);
        Assert.AreEqual(GraphBuilder.IR.DType.Float32, got.Info("logits").DType);
        Assert.AreEqual(GraphBuilder.IR.DType.Int64, got.Info("input_ids").DType);
        CollectionAssert.AreEqual(expected.ReadInt64("input_ids"), got.ReadInt64("input_ids"));
        var mask = expected.ReadInt64("attention_mask");
        CollectionAssert.AreEqual(mask, got.ReadInt64("attention_mask"));
        var shape = expected.Info("logits").Shape;
        var err = Compare.MaxErrorAtRealTokens(expected.ReadFloat32("logits"), got.ReadFloat32("logits"), mask, (int)shape[1], (int)shape[2]);
        Assert.IsLessThanOrEqualTo(1e-4, err, $"max |Δlogit| / max |logit| = {err:G3}");
    }

    /// <summary>Labels of the JSONL records, right-padded with −100 to <paramref name="t"/>.</summary>
    private static long[] Labels(string jsonl, int t)
    {
        var rows = File.ReadAllLines(jsonl).Where(l => l.Trim().Length > 0).ToArray();
        var labels = Enumerable.Repeat(-100L, rows.Length * t).ToArray();
        for (var r = 0; r < rows.Length; r++)
        {
            using var doc = JsonDocument.Parse(rows[r]);
            var row = doc.RootElement.GetProperty("labels").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            row.CopyTo(labels, r * t);
        }
        return labels;
    }

    /// <summary>transformers' causal-LM loss: mean CE of logits[t] against labels[t+1] where that label ≠ −100.</summary>
    private static double ReferenceLoss(float[] logits, long[] labels, int n, int t, int v)
    {
        double sum = 0;
        var count = 0;
        for (var r = 0; r < n; r++)
        {
            for (var i = 0; i < t - 1; i++)
            {
                var y = labels[(r * t) + i + 1];
                if (y < 0) continue;
                var row = logits.Skip(((r * t) + i) * v).Take(v).Select(x => (double)x).ToArray();
                var lse = Math.Log(row.Sum(x => Math.Exp(x - row.Max()))) + row.Max();
                sum += lse - row[y];
                count++;
            }
        }
        return sum / count;
    }

    [GeneratedRegex(@"loss (-?[0-9.eE+-]+)")]
    private static partial Regex LossPattern();

    [GeneratedRegex(@"perplexity ([0-9.eE+-]+)")]
    private static partial Regex PerplexityPattern();
}

/// <summary>Runs the trainer CLI in process, capturing stdout and stderr.</summary>
internal static class Cli
{
    private static readonly Lock Gate = new();

    public static (int Rc, string Out, string Err) Run(string[] args)
    {
        lock (Gate)
        {
            var (oldOut, oldErr) = (Console.Out, Console.Error);
            using var o = new StringWriter();
            using var e = new StringWriter();
            Console.SetOut(o);
            Console.SetError(e);
            try
            {
                var rc = Commands.Run(args);
                return (rc, o.ToString(), e.ToString());
            }
            finally
            {
                Console.SetOut(oldOut);
                Console.SetError(oldErr);
            }
        }
    }
}
