using System.Runtime.InteropServices;
using System.Text.Json;
using MixLoRA.GraphBuilder.Autodiff;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Losses;
using MixLoRA.GraphBuilder.Tests.Fixtures;
using MixLoRA.GraphBuilder.Tests.Ops;
using MixLoRA.Runtime;

namespace MixLoRA.GraphBuilder.Tests.Losses;

[TestClass]
public sealed class CausalLmLossTests
{
    private static Graph LossGraph(DType dtype, long rows, long cols, long vocab, bool withGrad)
    {
        var b = new Builder("causal_lm_loss");
        var logits = b.Input("logits", dtype, rows * cols, vocab);
        var labels = b.Input("labels", DType.Int64, rows, cols);
        var (loss, count) = CausalLmLoss.Emit(b, logits, labels);
        b.Output(loss, "loss");
        b.Output(count, "count");
        if (withGrad) b.Output(Gradients.Emit(b, loss, [logits])["logits"], "grad");
        return b.Build();
    }

    /// <summary>Plain C#: mean over t &lt; T−1 with labels[r, t+1] ≠ −100 of −log softmax(logits[r·T+t])[label].</summary>
    private static (double Loss, int Count) Reference(double[] logits, long[] labels, long rows, long cols, long vocab)
    {
        double sum = 0;
        var count = 0;
        for (long r = 0; r < rows; r++)
        {
            for (long t = 0; t + 1 < cols; t++)
            {
                var target = labels[(r * cols) + t + 1];
                if (target == -100) continue;
                var row = logits.AsSpan((int)(((r * cols) + t) * vocab), (int)vocab).ToArray();
                var max = row.Max();
                var logZ = max + Math.Log(row.Sum(x => Math.Exp(x - max)));
                sum += logZ - row[target];
                count++;
            }
        }
        return (count == 0 ? 0 : sum / count, count);
    }

    private static long[] RandomLabels(Random rng, long n, long vocab, double ignoreFraction) =>
        Enumerable.Range(0, (int)n).Select(_ => rng.NextDouble() < ignoreFraction ? -100L : rng.Next((int)vocab)).ToArray();

    [TestMethod]
    public void ValueMatchesPlainComputationInFloat32()
    {
        const long B = 3, T = 6, V = 11;
        var rng = new Random(7);
        var logits = GradCheck.Normal(rng, B * T * V).Select(x => (double)(float)(3 * x)).ToArray();
        var labels = RandomLabels(rng, B * T, V, 0.3);
        var (expected, count) = Reference(logits, labels, B, T, V);
        Assert.IsGreaterThan(3, count, "the random labels should leave several valid targets");
        using var run = new GraphRunner(OrtRuntime.Cpu, LossGraph(DType.Float32, B, T, V, withGrad: false));
        var r = run.Run(new Dictionary<string, HostTensor>
        {
            ["logits"] = HostTensor.Of(logits.Select(x => (float)x).ToArray(), B * T, V),
            ["labels"] = HostTensor.Of(labels, B, T),
        });
        Assert.AreEqual(DType.Float32, r["loss"].DType);
        Assert.AreEqual(expected, r["loss"].Scalar(), 2e-6 * Math.Abs(expected));
        Assert.AreEqual((double)count, r["count"].Scalar());
    }

    [TestMethod]
    public void Float16LogitsAreUpcastBeforeTheSoftmax()
    {
        const long B = 2, T = 5, V = 9;
        var rng = new Random(11);
        var halves = GradCheck.Normal(rng, B * T * V).Select(x => (Half)(4 * x)).ToArray();
        var labels = RandomLabels(rng, B * T, V, 0.2);
        var (expected, _) = Reference(halves.Select(h => (double)h).ToArray(), labels, B, T, V);
        using var run = new GraphRunner(OrtRuntime.Cpu, LossGraph(DType.Float16, B, T, V, withGrad: false));
        var r = run.Run(new Dictionary<string, HostTensor>
        {
            ["logits"] = new(DType.Float16, [B * T, V], MemoryMarshal.AsBytes(halves.AsSpan()).ToArray()),
            ["labels"] = HostTensor.Of(labels, B, T),
        });
        Assert.AreEqual(DType.Float32, r["loss"].DType);
        Assert.AreEqual(expected, r["loss"].Scalar(), 2e-6 * Math.Abs(expected));
    }

    [TestMethod]
    public void NoValidTokenGivesZeroLossAndZeroGradient()
    {
        const long B = 2, T = 3, V = 4;
        var labels = new long[] { 5 % V, -100, -100, 1, -100, -100 };   // only column 0 is set, which nothing predicts
        using var run = new GraphRunner(OrtRuntime.Cpu, LossGraph(DType.Float32, B, T, V, withGrad: true));
        var r = run.Run(new Dictionary<string, HostTensor>
        {
            ["logits"] = HostTensor.Of(GradCheck.Normal(new Random(3), B * T * V).Select(x => (float)x).ToArray(), B * T, V),
            ["labels"] = HostTensor.Of(labels, B, T),
        });
        Assert.AreEqual(0.0, r["loss"].Scalar());
        Assert.AreEqual(0.0, r["count"].Scalar());
        Assert.IsTrue(r["grad"].Doubles().All(g => g == 0), "gradient must be exactly zero (and not NaN)");
    }

    [TestMethod]
    public void GradientMatchesFiniteDifferences()
    {
        const long B = 2, T = 4, V = 5;
        const double eps = 1e-6;
        var rng = new Random(5);
        var logits = GradCheck.Normal(rng, B * T * V);
        var labels = new long[] { 0, 3, -100, 4, -100, -100, 1, 2 };
        using var run = new GraphRunner(OrtRuntime.Cpu, LossGraph(DType.Float64, B, T, V, withGrad: true));
        Dictionary<string, HostTensor> Feeds(double[] x) => new()
        {
            ["logits"] = HostTensor.Of(x, B * T, V),
            ["labels"] = HostTensor.Of(labels, B, T),
        };
        var analytic = run.Run(Feeds(logits))["grad"].Doubles();
        var maxErr = 0.0;
        for (var k = 0; k < logits.Length; k++)
        {
            var plus = (double[])logits.Clone();
            var minus = (double[])logits.Clone();
            plus[k] += eps;
            minus[k] -= eps;
            var numeric = (run.Run(Feeds(plus))["loss"].Scalar() - run.Run(Feeds(minus))["loss"].Scalar()) / (2 * eps);
            maxErr = Math.Max(maxErr, Math.Abs(analytic[k] - numeric));
        }
        Assert.IsLessThan(1e-8, maxErr, $"max |analytic − numeric| = {maxErr:G3}");
        // rows whose next label is ignored (and every row's last position) get no gradient
        foreach (var row in new[] { 1, 3, 4, 7 })
        {
            Assert.IsTrue(analytic.Skip(row * (int)V).Take((int)V).All(g => g == 0), $"row {row} should have zero gradient");
        }
    }

    [TestMethod]
    public void MatchesTheReferenceStep0LossOnParityLogits()
    {
        using var st = new SafetensorsFile(Repo.Parity("llama-basic", "expected", "logits_step0.safetensors"));
        var info = st.Info("logits");
        var (B, T, V) = (info.Shape[0], info.Shape[1], info.Shape[2]);
        var records = File.ReadLines(Repo.Parity("llama-basic", "data.jsonl")).Take((int)B)
            .Select(l => JsonDocument.Parse(l).RootElement.GetProperty("labels").EnumerateArray().Select(e => e.GetInt64()).ToArray()).ToArray();
        var labels = records.SelectMany(r => r.Concat(Enumerable.Repeat(-100L, (int)T - r.Length))).ToArray(); // right padding
        using var losses = JsonDocument.Parse(File.ReadAllText(Repo.Parity("llama-basic", "expected", "losses.json")));
        var expected = losses.RootElement[0].GetProperty("lm_loss").GetDouble();

        using var run = new GraphRunner(OrtRuntime.Cpu, LossGraph(DType.Float32, B, T, V, withGrad: false));
        var r = run.Run(new Dictionary<string, HostTensor>
        {
            ["logits"] = HostTensor.Of(st.ReadFloat32("logits"), B * T, V),
            ["labels"] = HostTensor.Of(labels, B, T),
        });
        Assert.AreEqual(expected, r["loss"].Scalar(), 1e-6 * expected);
    }
}
