using MixLoRA.GraphBuilder.Autodiff;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;

namespace MixLoRA.GraphBuilder.Tests.Ops;

/// <summary>
/// Central finite differences in float64 on ORT CPU against the emitted backward graph. The loss is
/// Σ w ⊙ f(x) with a fixed random w, so every output element's gradient is exercised.
/// </summary>
public static class GradCheck
{
    public sealed record Result(double MaxError, string Worst);

    public static Result Run(GradCase c, int seed = 1234)
    {
        var rng = new Random(seed);
        var inputs = c.Inputs.Select(s => Fill(s, rng)).ToArray();
        var yShape = OutputShape(c, inputs);
        var w = HostTensor.Of(Normal(rng, yShape.Aggregate(1L, (a, b) => a * b)), yShape);
        var (lossGraph, gradGraph, floatIdx) = Graphs(c, inputs, yShape);
        var fresh = lossGraph.Nodes.Any(n => n.OpType == "Dropout");
        using var lossRunner = fresh ? null : new GraphRunner(OrtRuntime.Cpu, lossGraph);
        double Loss(HostTensor[] xs)
        {
            var feeds = Feeds(xs, w);
            if (lossRunner != null) return lossRunner.Run(feeds)["loss"].Scalar();
            using var r = new GraphRunner(OrtRuntime.Cpu, lossGraph);
            return r.Run(feeds)["loss"].Scalar();
        }
        using var gradRunner = new GraphRunner(OrtRuntime.Cpu, gradGraph);
        var analytic = gradRunner.Run(Feeds(inputs, w));
        var maxErr = 0.0;
        var worst = "";
        foreach (var i in floatIdx)
        {
            var a = analytic[$"grad_{i}"].Doubles();
            var x = inputs[i].Doubles();
            for (var k = 0; k < x.Length; k++)
            {
                var numeric = (Loss(With(inputs, i, x, k, c.Eps)) - Loss(With(inputs, i, x, k, -c.Eps))) / (2 * c.Eps);
                var err = Math.Abs(a[k] - numeric) / Math.Max(1, Math.Abs(numeric));
                if (err > maxErr) (maxErr, worst) = (err, $"input {i} element {k}: analytic {a[k]:G6}, numeric {numeric:G6}");
            }
        }
        return new Result(maxErr, worst);
    }

    private static Dictionary<string, HostTensor> Feeds(HostTensor[] xs, HostTensor w)
    {
        var d = xs.Select((t, i) => (t, i)).ToDictionary(p => $"x{p.i}", p => p.t);
        d["w"] = w;
        return d;
    }

    private static HostTensor[] With(HostTensor[] xs, int i, double[] x, int k, double delta)
    {
        var copy = (double[])x.Clone();
        copy[k] += delta;
        var r = (HostTensor[])xs.Clone();
        r[i] = HostTensor.Of(copy, xs[i].Shape);
        return r;
    }

    private static long[] OutputShape(GradCase c, HostTensor[] inputs)
    {
        var b = new Builder("probe");
        var xs = Declare(b, c, inputs);
        b.Output(c.Forward(b, xs), "y");
        using var r = new GraphRunner(OrtRuntime.Cpu, b.Build());
        var feeds = inputs.Select((t, i) => (t, i)).ToDictionary(p => $"x{p.i}", p => p.t);
        return r.Run(feeds)["y"].Shape;
    }

    private static (Graph Loss, Graph Grad, int[] FloatIdx) Graphs(GradCase c, HostTensor[] inputs, long[] yShape)
    {
        Graph Make(bool withGrads)
        {
            var b = new Builder(withGrads ? "gradcheck" : "loss");
            var xs = Declare(b, c, inputs);
            var w = b.Input("w", DType.Float64, Shape.Of(yShape));
            var y = c.Forward(b, xs);
            var loss = b.ReduceSum(b.Mul(b.Cast(y, DType.Float64), w));
            b.Output(loss, "loss");
            if (withGrads)
            {
                var floats = xs.Where(v => v.DType.IsFloat()).ToArray();
                var grads = Gradients.Emit(b, loss, floats);
                foreach (var v in floats) b.Output(grads[v.Name], $"grad_{v.Name[1..]}");
            }
            return b.Build();
        }
        var idx = inputs.Select((t, i) => (t, i)).Where(p => p.t.DType.IsFloat()).Select(p => p.i).ToArray();
        return (Make(false), Make(true), idx);
    }

    private static Value[] Declare(Builder b, GradCase c, HostTensor[] inputs) =>
        inputs.Select((t, i) => b.Input($"x{i}", t.DType, Shape.Of(t.Shape))).ToArray();

    public static HostTensor Fill(Spec s, Random rng)
    {
        var n = s.Dims.Aggregate(1L, (a, b) => a * b);
        return s.Gen switch
        {
            Gen.Normal => HostTensor.Of(Normal(rng, n), s.Dims),
            Gen.Positive => HostTensor.Of(Enumerable.Range(0, (int)n).Select(_ => 0.5 + (1.5 * rng.NextDouble())).ToArray(), s.Dims),
            Gen.Distinct => HostTensor.Of(Enumerable.Range(0, (int)n).Select(i => (i * 0.37) - (n * 0.15)).OrderBy(_ => rng.Next()).ToArray(), s.Dims),
            Gen.Index => HostTensor.Of(Enumerable.Range(0, (int)n).Select(_ => (long)rng.Next((int)s.Max)).ToArray(), s.Dims),
            Gen.IntConst => HostTensor.Of(s.Values!, s.Dims),
            Gen.Bool => HostTensor.Of(Enumerable.Range(0, (int)n).Select(_ => rng.Next(2) == 1).ToArray(), s.Dims),
            _ => throw new ArgumentOutOfRangeException(nameof(s)),
        };
    }

    public static double[] Normal(Random rng, long n) =>
        Enumerable.Range(0, (int)n).Select(_ => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble())).ToArray();
}
