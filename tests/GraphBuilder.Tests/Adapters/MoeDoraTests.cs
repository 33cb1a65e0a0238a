using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Autodiff;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;

namespace MixLoRA.GraphBuilder.Tests.Adapters;

/// <summary>
/// DoRA on MixLoRA experts: one MoE block (3 experts, top-2, gate/up/down targeted, float64 compute on ORT CPU)
/// against a plain C# computation of the reference semantics: slot j of expert e gives
/// c^down_e ⊙ (W2 + s·B2_e A2_e) h_j, h_j = silu(c^gate_e ⊙ (W1 + s·ΔW1_e) x) ⊙ (c^up_e ⊙ (W3 + s·ΔW3_e) x),
/// c_e = m_e / ‖W + s·B_e A_e‖_row, mixed with the renormalized top-2 router weights; and the graph's gradients
/// wrt every A, B, m and the router against central differences of that computation with the norms held fixed.
/// </summary>
[TestClass]
public sealed class MoeDoraTests
{
    private const int N = 3, D = 4, F = 6, E = 3, K = 2, R = 2;
    private const double Scaling = 1.5;                        // lora_alpha 3 / r 2
    private static readonly string[] Modules = ["gate_proj", "up_proj", "down_proj"];

    private static AdapterConfig Config()
    {
        var file = Path.Combine(Path.GetTempPath(), $"moe-dora-{Guid.NewGuid():N}.json");
        File.WriteAllText(file, """
            {"peft_type": "MIXLORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 3, "lora_dropout": 0.0,
             "target_modules": ["gate_proj", "up_proj", "down_proj"], "use_dora": true,
             "routing_strategy": "mixlora", "num_experts": 3, "top_k": 2}
            """);
        try { return AdapterConfig.Load(file); }
        finally { File.Delete(file); }
    }

    private static (long Out, long In) ShapeOf(string module) => module == "down_proj" ? (D, F) : (F, D);

    /// <summary>The graph: out (N, D) and loss Σ wl ⊙ out; the trainables are fp32 inputs named by their keys.</summary>
    private static (Builder B, Value Out, Value Loss, IReadOnlyList<TrainableTensor> Tensors, IReadOnlyList<Value> Params) Build()
    {
        var b = new Builder("moe_dora");
        var x = b.Input("x", DType.Float64, Shape.Of(N, D));
        var w = Modules.ToDictionary(m => m, m => b.Input(m, DType.Float64, Shape.Of(ShapeOf(m).Out, ShapeOf(m).In)));
        var wl = b.Input("wl", DType.Float64, Shape.Of(N, D));
        var site = new MlpSite(0, "model.layers.0.mlp", D, F, (m, v) => b.Linear(v, w[m]), v => b.Act("silu", v),
            b.Floats(Enumerable.Repeat(1.0, N).ToArray(), DType.Float32, N), m => w[m]);
        var adapter = new AdapterGraph(Config(), DType.Float64, null);
        var y = adapter.Mlp(b, site, x) ?? throw new AssertFailedException("MixLoRA replaces the MLP");
        return (b, y, b.ReduceSum(b.Mul(y, wl)), adapter.Params.Tensors, adapter.Params.Inputs);
    }

    private static Dictionary<string, double[]> Values(IReadOnlyList<TrainableTensor> tensors, int seed)
    {
        var rng = new Random(seed);
        double[] Fill(long n, double lo = -1, double hi = 1) => Enumerable.Range(0, (int)n).Select(_ => (double)(float)(lo + ((hi - lo) * rng.NextDouble()))).ToArray();
        var v = new Dictionary<string, double[]> { ["x"] = Fill(N * D), ["wl"] = Fill(N * D) };
        foreach (var m in Modules) v[m] = Fill(ShapeOf(m).Out * ShapeOf(m).In);
        foreach (var t in tensors) v[t.Key] = t.Key.EndsWith("lora_magnitude_vector", StringComparison.Ordinal) ? Fill(t.Count, 0.5, 2) : Fill(t.Count);
        return v;
    }

    private static Dictionary<string, HostTensor> Feeds(Dictionary<string, double[]> v, IReadOnlyList<TrainableTensor> tensors)
    {
        var f = new Dictionary<string, HostTensor> { ["x"] = HostTensor.Of(v["x"], N, D), ["wl"] = HostTensor.Of(v["wl"], N, D) };
        foreach (var m in Modules) f[m] = HostTensor.Of(v[m], ShapeOf(m).Out, ShapeOf(m).In);
        foreach (var t in tensors) f[t.Key] = HostTensor.Of(v[t.Key].Select(d => (float)d).ToArray(), t.Shape);
        return f;
    }

    private static string Expert(string module, int e) => $"mixlora.layers.0.mlp.{module}.experts.{e}";

    /// <summary>W + s·B_e A_e (out × in) of one expert and projection.</summary>
    private static double[] Merged(Dictionary<string, double[]> v, string module, int e)
    {
        var (o, i) = ShapeOf(module);
        var (a, bw, w) = (v[$"{Expert(module, e)}.lora_A.weight"], v[$"{Expert(module, e)}.lora_B.weight"], v[module]);
        var merged = new double[o * i];
        for (var r = 0; r < o; r++)
            for (var c = 0; c < i; c++)
                merged[(r * i) + c] = w[(r * i) + c] + (Scaling * Enumerable.Range(0, R).Sum(k => bw[(r * R) + k] * a[(k * i) + c]));
        return merged;
    }

    /// <summary>Row norms ‖W + s·B_e A_e‖ keyed by expert prefix.</summary>
    private static Dictionary<string, double[]> Norms(Dictionary<string, double[]> v)
    {
        var norms = new Dictionary<string, double[]>();
        foreach (var m in Modules)
            for (var e = 0; e < E; e++)
            {
                var (o, i) = ShapeOf(m);
                var merged = Merged(v, m, e);
                norms[Expert(m, e)] = Enumerable.Range(0, (int)o).Select(r => Math.Sqrt(Enumerable.Range(0, (int)i).Sum(c => merged[(r * i) + c] * merged[(r * i) + c]))).ToArray();
            }
        return norms;
    }

    /// <summary>c_e ⊙ (W + s·B_e A_e) v for one token's input vector.</summary>
    private static double[] Project(Dictionary<string, double[]> p, Dictionary<string, double[]> norms, string module, int e, double[] input)
    {
        var (o, i) = ShapeOf(module);
        var merged = Merged(p, module, e);
        var m = p[$"{Expert(module, e)}.lora_magnitude_vector"];
        return Enumerable.Range(0, (int)o).Select(r => m[r] / norms[Expert(module, e)][r] * Enumerable.Range(0, (int)i).Sum(c => merged[(r * i) + c] * input[c])).ToArray();
    }

    /// <summary>The block's output (N × D) computed directly; norms from the given values unless fixed ones are passed.</summary>
    private static double[] Plain(Dictionary<string, double[]> p, Dictionary<string, double[]>? fixedNorms = null)
    {
        var norms = fixedNorms ?? Norms(p);
        var router = p["mixlora.layers.0.mlp.moe_gate.weight"];
        var y = new double[N * D];
        for (var n = 0; n < N; n++)
        {
            var xn = p["x"].Skip(n * D).Take(D).ToArray();
            var logits = Enumerable.Range(0, E).Select(e => Enumerable.Range(0, D).Sum(c => router[(e * D) + c] * xn[c])).ToArray();
            var probs = logits.Select(l => Math.Exp(l - logits.Max())).ToArray();
            var top = Enumerable.Range(0, E).OrderByDescending(e => probs[e]).Take(K).ToArray();
            var total = top.Sum(e => probs[e]);
            foreach (var e in top)
            {
                var g = Project(p, norms, "gate_proj", e, xn);
                var u = Project(p, norms, "up_proj", e, xn);
                var h = g.Select((gv, c) => gv / (1 + Math.Exp(-gv)) * u[c]).ToArray();
                var down = Project(p, norms, "down_proj", e, h);
                for (var c = 0; c < D; c++) y[(n * D) + c] += probs[e] / total * down[c];
            }
        }
        return y;
    }

    [TestMethod]
    public void ForwardMatchesThePlainComputation()
    {
        var (b, y, _, tensors, _) = Build();
        b.Output(y, "out");
        Assert.HasCount((3 * 3 * E) + 1, tensors, "A, B and m per expert and projection, and the router");
        var v = Values(tensors, 3);
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_BASIC };   // no fp32-only QuickGelu fusion
        using var r = new GraphRunner(OrtRuntime.Cpu, MixLoRA.GraphBuilder.Onnx.OnnxWriter.ToBytes(b.Build()), options);
        var got = r.Run(Feeds(v, tensors))["out"].Doubles();
        var want = Plain(v);
        for (var k = 0; k < want.Length; k++) Assert.AreEqual(want[k], got[k], 1e-6 * Math.Max(1, Math.Abs(want[k])), $"element {k}");
    }

    [TestMethod]
    public void GradientsMatchFiniteDifferencesWithTheNormsDetached()
    {
        var (b, _, loss, tensors, ps) = Build();
        var grads = Gradients.Emit(b, loss, ps);
        foreach (var p in ps) b.Output(grads[p.Name], "grad_" + p.Name);
        var v = Values(tensors, 5);
        using var r = new GraphRunner(OrtRuntime.Cpu, b.Build());
        var analytic = r.Run(Feeds(v, tensors));
        var norms = Norms(v);
        double Loss(Dictionary<string, double[]> p, bool fixedNorms) => Plain(p, fixedNorms ? norms : null).Select((o, i) => o * p["wl"][i]).Sum();
        const double eps = 1e-6;
        var detachGap = 0.0;
        foreach (var t in tensors)
        {
            var g = analytic["grad_" + t.Key].Doubles();
            for (var k = 0; k < t.Count; k++)
            {
                double At(double d, bool fixedNorms)
                {
                    var c = new Dictionary<string, double[]>(v) { [t.Key] = (double[])v[t.Key].Clone() };
                    c[t.Key][k] += d;
                    return Loss(c, fixedNorms);
                }
                var numeric = (At(eps, true) - At(-eps, true)) / (2 * eps);
                var tol = (t.Key.Contains("moe_gate", StringComparison.Ordinal) ? 1e-4 : 1e-6) * Math.Max(1, Math.Abs(numeric));   // the router runs in fp32
                Assert.AreEqual(numeric, g[k], tol, $"d loss / d {t.Key}[{k}]");
                if (t.Key.EndsWith(".weight", StringComparison.Ordinal) && !t.Key.Contains("moe_gate", StringComparison.Ordinal))
                    detachGap = Math.Max(detachGap, Math.Abs(((At(eps, false) - At(-eps, false)) / (2 * eps)) - g[k]));
            }
        }
        Assert.IsGreaterThan(1e-3, detachGap, "the norms' own derivative must not be in the gradient (they are detached)");
    }
}
