using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.Runtime;
using MixLoRA.Trainer.Model;

namespace MixLoRA.Trainer.Tests.Model;

/// <summary>
/// The independent float64 reference (<see cref="NaiveLlama"/>, read through <see cref="NaiveSpec"/>) on every
/// family fixture in tests/fixtures/families: it reproduces transformers' logits, and our forward graph on the CPU
/// (float32 and float64 compute) reproduces it within 1e-5 relative, at every real token of a right-padded batch.
/// </summary>
[TestClass]
public sealed class NaiveFamilyTests
{
    private sealed record Case(NaiveSpec Spec, Dictionary<string, (long[] Shape, float[] Data)> Weights, long[] Ids, long[] Mask, float[] Transformers, int N, int T, int V)
    {
        public string Model { get; init; } = "";

        /// <summary>NaiveLlama's logits for the batch (each row alone, its real tokens only), zero at padding.</summary>
        public double[] Naive()
        {
            var all = new double[N * T * V];
            for (var r = 0; r < N; r++)
            {
                var len = Mask.Skip(r * T).Take(T).Count(x => x == 1);
                var ids = Ids.Skip(r * T).Take(len).Select(x => (int)x).ToArray();
                var rows = NaiveLlama.Forward(Spec, Weights, ids, [.. ids.Select(_ => 1)]);
                for (var i = 0; i < len; i++) rows[i].CopyTo(all, ((r * T) + i) * V);
            }
            return all;
        }
    }

    private static Case Load(string family)
    {
        var dir = MixLoRA.Tests.TestRepo.FamilyCase(family);
        var model = Path.Combine(dir, "model");
        using var expected = new SafetensorsFile(Path.Combine(dir, "expected", "logits_base.safetensors"));
        var shape = expected.Info("logits").Shape;
        using var st = new SafetensorsFile(Path.Combine(model, "model.safetensors"));
        var weights = st.Names.ToDictionary(n => n, n => (st.Info(n).Shape, st.ReadFloat32(n)), StringComparer.Ordinal);
        return new Case(NaiveSpec.Load(Path.Combine(model, "config.json")), weights, expected.ReadInt64("input_ids"), expected.ReadInt64("attention_mask"),
            expected.ReadFloat32("logits"), (int)shape[0], (int)shape[1], (int)shape[2]) { Model = model };
    }

    /// <summary>max |want − got| over real tokens / max |want| there.</summary>
    private static double MaxRelative(double[] want, IReadOnlyList<double> got, long[] mask, int v)
    {
        double err = 0, scale = 1e-30;
        for (var row = 0; row < mask.Length; row++)
        {
            if (mask[row] == 0) continue;
            for (var k = 0; k < v; k++)
            {
                scale = Math.Max(scale, Math.Abs(want[(row * v) + k]));
                err = Math.Max(err, Math.Abs(want[(row * v) + k] - got[(row * v) + k]));
            }
        }
        return err / scale;
    }

    [TestMethod]
    [DynamicData(nameof(MixLoRA.Tests.TestRepo.Families), typeof(MixLoRA.Tests.TestRepo))]
    public void TheReferenceReproducesTransformers(string family)
    {
        var c = Load(family);
        Assert.IsTrue(c.Mask.Any(x => x == 0), "the fixture batch is right-padded");
        var err = MaxRelative(c.Naive(), [.. c.Transformers.Select(x => (double)x)], c.Mask, c.V);
        Assert.IsLessThanOrEqualTo(1e-5, err, $"{family}: naive reference vs transformers: {err:G3}");
    }

    /// <summary>Each family feature the reference models matters on its fixture: leaving it out misses transformers by over 50 times the tolerance (phi3's short factors [1, 1.25] move 12 positions least: 1e-3).</summary>
    [TestMethod]
    [DynamicData(nameof(MixLoRA.Tests.TestRepo.Families), typeof(MixLoRA.Tests.TestRepo))]
    public void EveryFeatureOfTheFamilyMatters(string family)
    {
        var c = Load(family);
        var s = c.Spec;
        var plainRope = s.InvFreq.Select(f => f.Select((_, i) => 1.0 / Math.Pow(10000, 2.0 * i / s.RotaryDim)).ToArray()).ToArray();
        var without = new Dictionary<string, NaiveSpec>();
        if (s.AttnSoftcap is not null) without["attention soft-cap"] = s with { AttnSoftcap = null };
        if (s.FinalSoftcap is not null) without["final soft-cap"] = s with { FinalSoftcap = null };
        if (s.Gemma) without["Gemma norms and embedding scale"] = s with { Gemma = false, Tied = true };
        if (s.QkNorm) without["q/k norm"] = s with { QkNorm = false };
        if (s.Windows.Any(w => w is not null)) without["sliding window"] = s with { Windows = new int?[s.Layers] };
        if (s.Act != "silu") without["gelu-tanh"] = s with { Act = "silu" };
        if (s.AttnScale != 1 / Math.Sqrt(s.HeadDim)) without["query_pre_attn_scalar"] = s with { AttnScale = 1 / Math.Sqrt(s.HeadDim) };
        if (s.RopeScale != 1) without["longrope attention factor"] = s with { RopeScale = 1 };
        if (s.RotaryDim != s.HeadDim)
        {
            var whole = Enumerable.Range(0, s.HeadDim / 2).Select(i => 1.0 / Math.Pow(10000, 2.0 * i / s.HeadDim)).ToArray();
            without["partial rotary"] = s with { RotaryDim = s.HeadDim, InvFreq = [.. s.InvFreq.Select(_ => whole)] };
        }
        if (s.InvFreq.Any(f => !f.SequenceEqual(s.InvFreq[0])) || !s.InvFreq[0].SequenceEqual(plainRope[0])) without["rope scaling / local rope base"] = s with { InvFreq = plainRope };
        Assert.IsNotEmpty(without, family);
        var want = c.Transformers.Select(x => (double)x).ToArray();
        foreach (var (what, spec) in without)
        {
            var err = MaxRelative((c with { Spec = spec }).Naive(), want, c.Mask, c.V);
            Assert.IsGreaterThan(5e-4, err, $"{family}: without {what} the reference still matches ({err:G3})");
        }
    }

    [TestMethod]
    [DynamicData(nameof(MixLoRA.Tests.TestRepo.Families), typeof(MixLoRA.Tests.TestRepo))]
    public void TheForwardGraphMatchesTheReference(string family)
    {
        var c = Load(family);
        var naive = c.Naive();
        foreach (var dtype in new[] { DType.Float32, DType.Float64 })
        {
            var cfg = ModelConfig.Load(c.Model);
            var fwd = ForwardGraph.Logits(cfg, new Shapes(c.N, c.T), dtype, dtype);
            using var model = new SafetensorsModel(c.Model);
            var feeds = WeightLoader.LoadHost(model, fwd.Weights.Declared);
            feeds["input_ids"] = HostTensor.Of(c.Ids, c.N, c.T);
            feeds["attention_mask"] = HostTensor.Of(c.Mask, c.N, c.T);
            using var runner = new GraphRunner(OrtRuntime.Cpu, fwd.Graph!);
            var got = runner.Run(feeds)["logits"].Floats();
            var err = MaxRelative(naive, [.. got.Select(x => (double)x)], c.Mask, c.V);
            Assert.IsLessThanOrEqualTo(1e-5, err, $"{family} ({dtype.Name()}): forward graph vs naive reference: {err:G3}");
        }
    }
}
