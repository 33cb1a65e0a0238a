using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Autodiff;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;

namespace MixLoRA.GraphBuilder.Tests.Adapters;

/// <summary>
/// DoRA on one linear in float64 on ORT CPU: y = (m / ‖W + s·B·A‖_row) ⊙ (W x + s·B·A x) against a plain C#
/// computation, and the gradients wrt A, B, m against central differences with the norm held fixed
/// (the reference detaches it), and the detach itself (the norm's own derivative is not in the gradient).
/// </summary>
[TestClass]
public sealed class DoraTests
{
    private const long N = 3, In = 4, Out = 5, R = 2;
    private static readonly LoraSettings S = new(2, 3.0, 0.0, false, true, "original");   // s = 1.5

    private static readonly string[] Names = ["x", "w", "a", "b", "m"];

    private static Dictionary<string, HostTensor> Inputs(int seed)
    {
        var rng = new Random(seed);
        double[] Fill(long n, double lo = -1, double hi = 1) => Enumerable.Range(0, (int)n).Select(_ => lo + ((hi - lo) * rng.NextDouble())).ToArray();
        return new()
        {
            ["x"] = HostTensor.Of(Fill(N * In), N, In), ["w"] = HostTensor.Of(Fill(Out * In), Out, In),
            ["a"] = HostTensor.Of(Fill(R * In), R, In), ["b"] = HostTensor.Of(Fill(Out * R), Out, R),
            ["m"] = HostTensor.Of(Fill(Out, 0.5, 2), Out), ["wl"] = HostTensor.Of(Fill(N * Out), N, Out),
        };
    }

    /// <summary>loss = Σ wl ⊙ DoRA(x); the norm from W, A, B (detached), or a fed input "norm" when fixedNorm.</summary>
    private static (Builder B, Value Out, Value Loss, Value[] Params, Value Norm) Build(bool fixedNorm)
    {
        var b = new Builder("dora");
        var v = Names.ToDictionary(n => n, n => b.Input(n, DType.Float64, n switch
        {
            "x" => Shape.Of(N, In), "w" => Shape.Of(Out, In), "a" => Shape.Of(R, In), "b" => Shape.Of(Out, R), _ => Shape.Of(Out),
        }));
        var wl = b.Input("wl", DType.Float64, Shape.Of(N, Out));
        var norm = fixedNorm ? b.Input("norm", DType.Float64, Shape.Of(Out)) : LoraLayer.WeightNorm(b, v["w"], v["a"], v["b"], S.Scaling);
        var y = b.Linear(v["x"], v["w"]);
        var delta = LoraLayer.Delta(b, v["x"], v["a"], v["b"], S, null);
        var out1 = b.Add(y, LoraLayer.DoraDelta(b, y, delta, v["m"], norm));
        var loss = b.ReduceSum(b.Mul(out1, wl));
        return (b, out1, loss, [v["a"], v["b"], v["m"]], norm);
    }

    /// <summary>DoRA computed directly: (m_o / ‖W_o + s·(B A)_o‖) · Σ_i (W + s·B·A)_oi x_ni.</summary>
    private static double[] Plain(Dictionary<string, HostTensor> f)
    {
        var (x, w, a, bw, m) = (f["x"].Doubles(), f["w"].Doubles(), f["a"].Doubles(), f["b"].Doubles(), f["m"].Doubles());
        var merged = new double[Out * In];
        for (var o = 0; o < Out; o++)
            for (var i = 0; i < In; i++)
            {
                var ba = 0.0;
                for (var k = 0; k < R; k++) ba += bw[(o * R) + k] * a[(k * In) + i];
                merged[(o * In) + i] = w[(o * In) + i] + (S.Scaling * ba);
            }
        var y = new double[N * Out];
        for (var o = 0; o < Out; o++)
        {
            var norm = Math.Sqrt(Enumerable.Range(0, (int)In).Sum(i => merged[(o * In) + i] * merged[(o * In) + i]));
            for (var n = 0; n < N; n++) y[(n * Out) + o] = m[o] / norm * Enumerable.Range(0, (int)In).Sum(i => merged[(o * In) + i] * x[(n * In) + i]);
        }
        return y;
    }

    [TestMethod]
    public void ForwardMatchesThePlainFormula()
    {
        var f = Inputs(7);
        var (b, out1, _, _, _) = Build(fixedNorm: false);
        b.Output(out1, "out");
        using var r = new GraphRunner(OrtRuntime.Cpu, b.Build());
        var got = r.Run(f)["out"].Doubles();
        var want = Plain(f);
        for (var k = 0; k < want.Length; k++) Assert.AreEqual(want[k], got[k], 1e-12 * Math.Max(1, Math.Abs(want[k])), $"element {k}");
    }

    [TestMethod]
    public void GradientsMatchFiniteDifferencesWithTheNormDetached()
    {
        var f = Inputs(11);
        var (gb, _, loss, ps, norm) = Build(fixedNorm: false);
        var grads = Gradients.Emit(gb, loss, ps);
        gb.Output(norm, "norm_out");
        foreach (var p in ps) gb.Output(grads[p.Name], "grad_" + p.Name);
        using var gr = new GraphRunner(OrtRuntime.Cpu, gb.Build());
        var analytic = gr.Run(f);

        var (lb, _, lloss, _, _) = Build(fixedNorm: true);
        lb.Output(lloss, "loss");
        using var lr = new GraphRunner(OrtRuntime.Cpu, lb.Build());
        var feeds = new Dictionary<string, HostTensor>(f) { ["norm"] = analytic["norm_out"] };
        const double eps = 1e-6;
        var detachMatters = 0.0;
        foreach (var p in new[] { "a", "b", "m" })
        {
            var g = analytic["grad_" + p].Doubles();
            var x = f[p].Doubles();
            for (var k = 0; k < x.Length; k++)
            {
                double At(double d)
                {
                    var c = (double[])x.Clone();
                    c[k] += d;
                    return lr.Run(new Dictionary<string, HostTensor>(feeds) { [p] = HostTensor.Of(c, f[p].Shape) })["loss"].Scalar();
                }
                var numeric = (At(eps) - At(-eps)) / (2 * eps);
                Assert.AreEqual(numeric, g[k], 1e-7 * Math.Max(1, Math.Abs(numeric)), $"d loss / d {p}[{k}]");
            }
            if (p != "m") detachMatters = Math.Max(detachMatters, FullDerivativeGap(f, p, g));
        }
        Assert.IsGreaterThan(1e-3, detachMatters, "the norm's own derivative must not be in the gradient (it is detached)");
    }

    /// <summary>Largest gap between the gradient and the derivative with the norm following the inputs.</summary>
    private static double FullDerivativeGap(Dictionary<string, HostTensor> f, string p, double[] g)
    {
        var x = f[p].Doubles();
        var gap = 0.0;
        for (var k = 0; k < x.Length; k++)
        {
            double At(double d)
            {
                var c = (double[])x.Clone();
                c[k] += d;
                var y = Plain(new Dictionary<string, HostTensor>(f) { [p] = HostTensor.Of(c, f[p].Shape) });
                var wl = f["wl"].Doubles();
                return y.Select((v, i) => v * wl[i]).Sum();
            }
            gap = Math.Max(gap, Math.Abs(((At(1e-6) - At(-1e-6)) / 2e-6) - g[k]));
        }
        return gap;
    }
}
