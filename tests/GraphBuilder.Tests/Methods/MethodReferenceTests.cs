using System.Text.Json;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Autodiff;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;

namespace MixLoRA.GraphBuilder.Tests.Methods;

/// <summary>
/// Issue 22's methods against <see cref="MoePeftRef"/>, an independent float64 transcription of MoE-PEFT's formulas
/// over <see cref="RefDecoder"/>, on a random tiny LLaMA (2 layers, hidden 8, 3 experts, r 2, all 7 targets) and a batch of
/// 2 × 6 tokens: our decoder graph (float64 compute, ORT CPU, composed ops) gives the reference's logits and router loss,
/// and its autodiff gradients of S = Σ logits ⊙ wl + aux loss w.r.t. every router and LoRA tensor equal central
/// differences of the reference's S, all within 1e-5 (relative to each tensor's largest value). Two masks: all ones
/// (MoE-PEFT's formulas exactly) and padding plus a hole mid-sequence (the losses and the switch's capacity skip masked
/// tokens; wl is 0 there).
/// </summary>
[TestClass]
public sealed class MethodReferenceTests
{
    private const int B = 2, T = 6;
    private static readonly RefShape S = new();

    public TestContext TestContext { get; set; } = null!;

    private static readonly Dictionary<string, MethodCase> Cases = new()
    {
        ["mixlora"] = new MethodCase("MIXLORA", "mixlora", [3], TopK: 2, AuxCoef: 0.05),
        ["mixlora-switch"] = new MethodCase("MIXLORA", "mixlora-switch", [3], Capacity: 2, ZCoef: 0.01, AuxCoef: 0.05),
        ["loramoe"] = new MethodCase("LORAMOE", null, [3]),
        ["mola"] = new MethodCase("MOLA", null, [3], TopK: 2, AuxCoef: 0.05),
        ["mola-per-layer"] = new MethodCase("MOLA", null, [3, 2], TopK: 2, AuxCoef: 0.05),
        ["hydralora"] = new MethodCase("HYDRALORA", null, [3]),
    };

    public static IEnumerable<object[]> Names() => Cases.Keys.Select(k => new object[] { k });

    [TestMethod]
    [DynamicData(nameof(Names))]
    public void GraphMatchesTheReferenceWithEveryTokenReal(string name) => Check(name, holes: false);

    [TestMethod]
    [DynamicData(nameof(Names))]
    public void GraphMatchesTheReferenceWithPaddingAndAHole(string name) => Check(name, holes: true);

    private void Check(string name, bool holes)
    {
        var c = Cases[name];
        var (graph, tensors) = Build(c);
        var rng = new Random(name.Length * 7919 + (holes ? 1 : 0));
        var values = Values(tensors, rng);
        var ids = Enumerable.Range(0, B * T).Select(_ => (long)rng.Next(S.V)).ToArray();
        long[] mask = holes ? [1, 1, 1, 1, 0, 0, 1, 0, 0, 1, 1, 1] : Enumerable.Repeat(1L, B * T).ToArray();
        var wl = Enumerable.Range(0, B * T * S.V).Select(i => mask[i / S.V] == 0 ? 0 : Round(rng, -1, 1)).ToArray();

        using var run = new GraphRunner(OrtRuntime.Cpu, graph);
        var got = run.Run(Feeds(values, tensors, ids, mask, wl));
        var (logits, aux, reference, _) = Reference(c, values, ids, mask, wl);

        var scale = logits.SelectMany(r => r).Max(Math.Abs);
        var gl = got["logits"].Doubles();
        var err = Enumerable.Range(0, B * T).Where(n => mask[n] == 1).SelectMany(n => Enumerable.Range(0, S.V).Select(v => Math.Abs(gl[(n * S.V) + v] - logits[n][v]))).Max() / scale;
        Assert.IsLessThanOrEqualTo(1e-5, err, $"{name}: logits, max relative error {err:G3}");
        var gotAux = got.TryGetValue("aux", out var a) ? a.Scalar() : 0;
        Assert.AreEqual(aux, gotAux, 1e-5 * Math.Max(Math.Abs(aux), 1e-12), $"{name}: router loss");
        if (c.AuxCoef > 0) Assert.IsGreaterThan(0, aux, "the case has a router loss");
        if (reference.Dropped + reference.Kept > 0)
            Assert.IsTrue(reference.Dropped > 0 && reference.Kept > 0, $"switch case drops some tokens and keeps others ({reference.Dropped} / {reference.Kept})");

        if (holes && c.Strategy == "mixlora-switch")
        {
            var counted = new RefDecoder(S, values).Forward(ids, mask, B, new MoePeftRef(c, S, values, mask, B) { CountMaskedTokens = true });
            var moved = Enumerable.Range(0, B * T).Where(n => mask[n] == 1).Max(n => counted[n].Zip(logits[n], (x, y) => Math.Abs(x - y)).Max());
            Assert.IsGreaterThan(1e-3 * scale, moved, "the case must depend on masked tokens taking no capacity");
        }

        var worst = 0.0;
        foreach (var t in tensors)
        {
            var g = got["grad_" + t.Key].Doubles();
            var numeric = new double[t.Count];
            for (var k = 0; k < t.Count; k++)
            {
                double At(double d)
                {
                    var v = new Dictionary<string, double[]>(values) { [t.Key] = (double[])values[t.Key].Clone() };
                    v[t.Key][k] += d;
                    return Reference(c, v, ids, mask, wl).S;
                }
                numeric[k] = (At(1e-6) - At(-1e-6)) / 2e-6;
            }
            var tscale = Math.Max(numeric.Max(Math.Abs), 1e-9);
            var terr = numeric.Select((n, k) => Math.Abs(n - g[k])).Max() / tscale;
            Assert.IsLessThanOrEqualTo(1e-5, terr, $"{name}: d S / d {t.Key}: max relative error {terr:G3}");
            worst = Math.Max(worst, terr);
        }
        TestContext.WriteLine($"{name} (holes {holes}): {tensors.Count} tensors; logits {err:G3}, aux {aux:G6} vs {gotAux:G6}, gradients ≤ {worst:G3}");
    }

    /// <summary>The reference's logits, router loss and S = Σ logits ⊙ wl + aux.</summary>
    private static (double[][] Logits, double Aux, MoePeftRef Ref, double S) Reference(MethodCase c, Dictionary<string, double[]> v, long[] ids, long[] mask, double[] wl)
    {
        var r = new MoePeftRef(c, S, v, mask, B);
        var logits = new RefDecoder(S, v).Forward(ids, mask, B, r);
        var aux = r.AuxLoss();
        var sum = aux;
        for (var n = 0; n < logits.Length; n++) for (var k = 0; k < S.V; k++) sum += logits[n][k] * wl[(n * S.V) + k];
        return (logits, aux, r, sum);
    }

    /// <summary>Our decoder with the method's adapter in float64: logits, aux, S and S's gradient per trainable.</summary>
    private static (Graph Graph, IReadOnlyList<TrainableTensor> Tensors) Build(MethodCase c)
    {
        using var doc = JsonDocument.Parse(c.ConfigJson());
        var cfg = AdapterConfig.Parse(new JsonFields("(test adapter)", doc.RootElement));
        using var model = JsonDocument.Parse(S.ConfigJson());
        var b = new Builder("method");
        var adapter = new AdapterGraph(cfg, DType.Float64, training: null);
        var start = ForwardGraph.Start(b, ModelConfig.Parse(new JsonFields("(test model)", model.RootElement)), new Shapes(B, T), DType.Float64, DType.Float64, adapter);
        var wl = b.Input("wl", DType.Float64, Shape.Of(B * T, S.V));
        var aux = adapter.AuxLoss(b);
        var sum = b.ReduceSum(b.Mul(start.Outputs.Logits, wl));
        var total = aux is null ? sum : b.Add(sum, aux);
        var grads = Gradients.Emit(b, total, adapter.Params.Inputs);
        foreach (var p in adapter.Params.Inputs) b.Output(grads[p.Name], "grad_" + p.Name);
        b.Output(start.Outputs.Logits, "logits");
        if (aux is not null) b.Output(aux, "aux");
        return (b.Build(), adapter.Params.Tensors);
    }

    private static double Round(Random rng, double lo, double hi) => (float)(lo + ((hi - lo) * rng.NextDouble()));

    private static Dictionary<string, double[]> Values(IReadOnlyList<TrainableTensor> tensors, Random rng)
    {
        var v = new Dictionary<string, double[]>(StringComparer.Ordinal);
        foreach (var (key, shape) in S.Weights())
        {
            var norm = key.EndsWith("norm.weight", StringComparison.Ordinal);
            v[key] = Enumerable.Range(0, shape.Aggregate(1, (x, y) => x * y)).Select(_ => norm ? Round(rng, 0.8, 1.2) : Round(rng, -0.5, 0.5)).ToArray();
        }
        foreach (var t in tensors)
        {
            var gate = t.Key.EndsWith("moe_gate.weight", StringComparison.Ordinal);
            v[t.Key] = Enumerable.Range(0, (int)t.Count).Select(_ => gate ? Round(rng, -1.5, 1.5) : Round(rng, -0.5, 0.5)).ToArray();
        }
        return v;
    }

    private static Dictionary<string, HostTensor> Feeds(Dictionary<string, double[]> v, IReadOnlyList<TrainableTensor> tensors, long[] ids, long[] mask, double[] wl)
    {
        var f = new Dictionary<string, HostTensor>
        {
            ["input_ids"] = HostTensor.Of(ids, B, T), ["attention_mask"] = HostTensor.Of(mask, B, T), ["wl"] = HostTensor.Of(wl, B * T, S.V),
        };
        foreach (var (key, shape) in S.Weights()) f[key] = HostTensor.Of(v[key], [.. shape.Select(d => (long)d)]);
        foreach (var t in tensors) f[t.Key] = HostTensor.Of(v[t.Key].Select(d => (float)d).ToArray(), t.Shape);
        return f;
    }
}
