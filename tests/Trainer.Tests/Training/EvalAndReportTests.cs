using System.Text.Json;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Trainer.Tests.Training;

/// <summary>
/// Issue 5 item 4: `--eval-data` with `--eval-steps` writes eval lines to metrics.jsonl (the final one equal
/// to the loss computed here from the reference's logits of its final adapter), and the final summary.
/// </summary>
[TestClass]
public sealed class EvalAndReportTests
{
    [TestMethod]
    public void EvalLinesMatchTheReferenceFinalLogitsAndTheSummaryIsPrinted()
    {
        // the parity run's settings (3 steps, batch 2, no shuffle, lr 0.01, wd 0.01) plus eval every 2 steps
        var output = Path.Combine(TestFiles.TempDir(), "run");
        var options = TrainFixture.Options(TrainFixture.Artifacts(), output, 3) with
        {
            WeightDecay = 0.01, Shuffle = false, EvalData = [new DataSource(TrainFixture.Data)], EvalSteps = 2,
        };
        var log = new StringWriter();
        var summary = TrainLoop.Run(options, log);

        var evals = TrainFixture.Metrics(output).Where(e => e.TryGetProperty("eval_loss", out _)).ToArray();
        CollectionAssert.AreEqual(new[] { 1, 2 }, evals.Select(e => e.GetProperty("step").GetInt32()).ToArray(), "after step 1 (every 2) and at the end, once");
        Assert.IsTrue(evals.All(e => double.IsFinite(e.GetProperty("eval_loss").GetDouble())));
        var want = ReferenceFinalLmLoss();
        Assert.AreEqual(want, evals[^1].GetProperty("eval_lm_loss").GetDouble(), 1e-4 * want, "eval lm loss of the final adapter");

        var text = log.ToString();
        Assert.Contains("done: 3 steps", text);
        Assert.Contains($"{summary.FirstLoss:F4} → {summary.LastLoss:F4}", text);
        Assert.Contains(Path.Combine(output, "adapter"), text);
        Assert.Contains(Path.Combine(output, "metrics.jsonl"), text);
        Assert.Contains("router load", text);
        var rows = text.Split('\n').Where(l => System.Text.RegularExpressions.Regex.IsMatch(l, @"^\s+\d+(\s+\d\.\d{3}){4}\s*$")).ToArray();
        Assert.HasCount(2, rows, "one router-load row per layer, one column per expert\n" + text);
        Assert.IsNotNull(summary.RouterLoad);
        Assert.AreEqual(2, summary.RouterLoad.GetLength(0));
    }

    /// <summary>Mean CE over shifted labels ≠ −100 of all records, from expected/logits_final.safetensors.</summary>
    private static double ReferenceFinalLmLoss()
    {
        using var f = new SafetensorsFile(Path.Combine(TrainFixture.ParityDir, "expected", "logits_final.safetensors"));
        var shape = f.Info("logits").Shape;
        var logits = f.ReadFloat32("logits");
        var (t, v) = ((int)shape[1], (int)shape[2]);
        var labels = File.ReadAllLines(TrainFixture.Data).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("labels").EnumerateArray().Select(x => x.GetInt32()).ToArray()).ToArray();
        double sum = 0;
        var n = 0;
        for (var r = 0; r < labels.Length; r++)
        {
            for (var p = 0; p + 1 < labels[r].Length; p++)
            {
                var target = labels[r][p + 1];
                if (target == -100) continue;
                var row = logits.AsSpan(((r * t) + p) * v, v);
                double max = double.NegativeInfinity, z = 0;
                foreach (var x in row) max = Math.Max(max, x);
                foreach (var x in row) z += Math.Exp(x - max);
                sum += max + Math.Log(z) - row[target];
                n++;
            }
        }
        return sum / n;
    }
}
