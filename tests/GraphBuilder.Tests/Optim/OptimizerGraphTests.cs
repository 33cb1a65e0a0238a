using MixLoRA.GraphBuilder.Autodiff;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.GraphBuilder.Optim;
using MixLoRA.GraphBuilder.Tests.Ops;
using MixLoRA.Runtime;

namespace MixLoRA.GraphBuilder.Tests.Optim;

[TestClass]
public sealed class OptimizerGraphTests
{
    private static readonly ParamSpec[] Tensors =
    [
        new("model.layers.0.mlp.experts.0.lora_A.weight", [4, 6]),
        new("model.layers.0.mlp.experts.0.lora_B.weight", [6, 4]),
        new("model.layers.0.mlp.gate.weight", [5]),
    ];

    // per-step gradient scale: the global norm is ≈ 7.3·s, so max_norm 1 clips s ≥ 0.2 and leaves the rest
    private static readonly double[] GradScales = [0.05, 2.0, 0.1, 3.0, 0.02, 1.5];

    private const double Tol = 1e-6;

    /// <summary>
    /// |a − e| relative to |e|, floored at the tensor's RMS: an update that lands near zero (p ≈ lr) cancels
    /// in fp32, leaving an error of an ulp of the operands, not of the result.
    /// </summary>
    private static double MaxRelError(float[] actual, double[] expected)
    {
        var floor = Math.Sqrt(expected.Average(e => e * e));
        return actual.Zip(expected).Max(p => Math.Abs(p.First - p.Second) / Math.Max(Math.Abs(p.Second), floor));
    }

    private static void RunSteps(OptimizerOptions o, bool floatStep, int[] expectClipped)
    {
        var rng = new Random(42);
        var init = Tensors.Select(t => GradCheck.Normal(rng, t.Shape.Aggregate(1L, (a, b) => a * b)).Select(x => (double)(float)(0.01 * x)).ToArray()).ToArray();
        var reference = new ReferenceAdamW(o.AdamW.Beta1, o.AdamW.Beta2, o.AdamW.Eps, o.AdamW.WeightDecay, o.MaxGradNorm);
        reference.Init(init);
        var state = new Dictionary<string, HostTensor>();
        for (var i = 0; i < Tensors.Length; i++)
        {
            var (name, shape) = (Tensors[i].Name, Tensors[i].Shape);
            state[name] = HostTensor.Of(init[i].Select(x => (float)x).ToArray(), shape);
            state[AdamW.MName(name)] = HostTensor.Of(new float[init[i].Length], shape);
            state[AdamW.VName(name)] = HostTensor.Of(new float[init[i].Length], shape);
        }
        using var run = new GraphRunner(OrtRuntime.Cpu, OptimizerGraph.Build(Tensors, o));
        var clipped = new List<int>();
        for (var step = 1; step <= GradScales.Length; step++)
        {
            var lr = 1e-2 * (1 - (0.1 * step));
            var grads = Tensors.Select(t => GradCheck.Normal(rng, t.Shape.Aggregate(1L, (a, b) => a * b)).Select(x => (double)(float)(GradScales[step - 1] * x)).ToArray()).ToArray();
            var feeds = new Dictionary<string, HostTensor>(state)
            {
                [AdamW.StepInput] = floatStep ? HostTensor.Of(new[] { (float)step }) : HostTensor.Of(new[] { (long)step }),
                [AdamW.LrInput] = HostTensor.Of(new[] { (float)lr }),
            };
            for (var i = 0; i < Tensors.Length; i++) feeds[AdamW.GradName(Tensors[i].Name)] = HostTensor.Of(grads[i].Select(x => (float)x).ToArray(), Tensors[i].Shape);
            var (norm, coef) = reference.Update(grads, (float)lr);
            if (coef < 1) clipped.Add(step);
            var r = run.Run(feeds);
            Assert.AreEqual(norm, r[OptimizerGraph.GradNormOutput].Scalar(), Tol * norm, $"grad_norm at step {step}");
            for (var i = 0; i < Tensors.Length; i++)
            {
                var name = Tensors[i].Name;
                foreach (var (output, expected) in new[] { (AdamW.NewName(name), reference.P[i]), (AdamW.MNewName(name), reference.M[i]), (AdamW.VNewName(name), reference.V[i]) })
                {
                    var err = MaxRelError(r[output].Floats(), expected);
                    Assert.IsLessThanOrEqualTo(Tol, err, $"{output} at step {step}: max relative error {err:G3}");
                }
                state[name] = r[AdamW.NewName(name)];
                state[AdamW.MName(name)] = r[AdamW.MNewName(name)];
                state[AdamW.VName(name)] = r[AdamW.VNewName(name)];
            }
        }
        CollectionAssert.AreEqual(expectClipped, clipped.ToArray(), "steps where clipping was active");
    }

    [TestMethod]
    public void AdamWWithWeightDecayMatchesReferenceOverSixSteps() =>
        RunSteps(new OptimizerOptions(new AdamWOptions(WeightDecay: 0.1)), floatStep: false, expectClipped: []);

    [TestMethod]
    public void ClippedAdamWMatchesReferenceWithClippingOnAndOff() =>
        RunSteps(new OptimizerOptions(new AdamWOptions(0.85, 0.99, 1e-8, 0.05), MaxGradNorm: 1.0, StepDType: DType.Float32), floatStep: true, expectClipped: [2, 4, 6]);

    [TestMethod]
    [DataRow(null, 0.5)]
    [DataRow(1.0, 0.5)]
    [DataRow(100.0, 0.5)]
    public void NormGraphGivesTheScaledNormAndTheUpdateScale(double? maxNorm, double gradScale)
    {
        var rng = new Random(4);
        var g = Enumerable.Range(0, 37).Select(_ => (float)(2 * rng.NextDouble() - 1)).ToArray();
        using var run = new GraphRunner(OrtRuntime.Cpu, OptimizerGraph.BuildNorm("flat", g.Length, maxNorm));
        var r = run.Run(new Dictionary<string, HostTensor>
        {
            ["flat.grad"] = HostTensor.Of(g, g.Length),
            [OptimizerGraph.GradScaleInput] = HostTensor.Of(new[] { (float)gradScale }),
        });
        var norm = Math.Sqrt(g.Sum(x => (double)x * x)) * gradScale;                   // ‖g · grad_scale‖
        var scale = gradScale * (maxNorm is { } m ? Math.Min(1, m / (norm + GradClip.NormEps)) : 1);
        Assert.AreEqual(norm, r[OptimizerGraph.GradNormOutput].Scalar(), Tol * norm);
        Assert.AreEqual(scale, r[OptimizerGraph.UpdateScaleOutput].Scalar(), Tol * scale);
        if (maxNorm == 1.0) Assert.IsLessThan(gradScale, scale, "this gradient's norm is above 1, so it is clipped");
    }

    [TestMethod]
    public void UpdateGraphIsTheStepLessItsNorm()
    {
        var t = Tensors[0];
        var full = OptimizerGraph.Build([t], new OptimizerOptions(new AdamWOptions(), GradScaleInput: true));
        var update = OptimizerGraph.BuildUpdate(t, new AdamWOptions());
        CollectionAssert.AreEquivalent(full.Inputs.Select(v => v.Name).ToArray(), update.Inputs.Select(v => v.Name).ToArray());
        CollectionAssert.AreEquivalent(full.Outputs.Select(v => v.Name).Where(n => n != OptimizerGraph.GradNormOutput).ToArray(), update.Outputs.Select(v => v.Name).ToArray());
        Assert.IsFalse(update.Nodes.Any(n => n.OpType == "ReduceSum"), "no norm reduction over the chunk");
    }

    [TestMethod]
    [DataRow(0.0, 1L)]
    [DataRow(0.0, 5L)]
    [DataRow(0.1, 2L)]
    public void FusedUpdateIsTheComposedOneBitForBit(double weightDecay, long step)
    {
        // 1,037 elements: the kernel's vector loop and its scalar tail; moments from earlier steps, a gradient scale
        var t = new ParamSpec("p", [1037]);
        var o = new AdamWOptions(WeightDecay: weightDecay);
        var fused = OptimizerGraph.BuildUpdate(t, o, fused: true);
        Assert.AreEqual(1, fused.Nodes.Count(n => n.OpType == AdamWOps.AdamWStepOp.OpType));
        Assert.IsLessThan(OptimizerGraph.BuildUpdate(t, o).Nodes.Length - 8, fused.Nodes.Length, "the per-element nodes are gone");
        var rng = new Random((int)step);
        float[] R(double scale, bool abs = false) => GradCheck.Normal(rng, 1037).Select(x => (float)(abs ? Math.Abs(scale * x) : scale * x)).ToArray();
        var feeds = new Dictionary<string, HostTensor>
        {
            ["p"] = HostTensor.Of(R(0.5), 1037), [AdamW.GradName("p")] = HostTensor.Of(R(3), 1037),
            [AdamW.MName("p")] = HostTensor.Of(R(0.1), 1037), [AdamW.VName("p")] = HostTensor.Of(R(0.01, abs: true), 1037),
            [AdamW.StepInput] = HostTensor.Of([step]) with { Shape = [] }, [AdamW.LrInput] = HostTensor.Of([2e-3f]) with { Shape = [] },
            [OptimizerGraph.GradScaleInput] = HostTensor.Of([0.37f]) with { Shape = [] },
        };
        using var a = new GraphRunner(OrtRuntime.Cpu, OptimizerGraph.BuildUpdate(t, o));
        using var b = new GraphRunner(OrtRuntime.Cpu, fused);
        var (want, got) = (a.Run(feeds), b.Run(feeds));
        foreach (var name in new[] { AdamW.NewName("p"), AdamW.MNewName("p"), AdamW.VNewName("p") })
        {
            CollectionAssert.AreEqual(want[name].Floats(), got[name].Floats(), name);
        }
        CollectionAssert.AreNotEqual(feeds["p"].Floats(), got[AdamW.NewName("p")].Floats(), "the step moved the parameters");
    }

    [TestMethod]
    public void GraphHasTheDocumentedIoContract()
    {
        var g = OptimizerGraph.Build(Tensors, new OptimizerOptions(new AdamWOptions(), GradScaleInput: true));
        var n = Tensors[0].Name;
        var inputs = g.Inputs.Select(v => v.Name).ToHashSet();
        var outputs = g.Outputs.Select(v => v.Name).ToHashSet();
        foreach (var x in new[] { "step", "lr", "grad_scale", n, n + ".grad", n + ".m", n + ".v" }) Assert.Contains(x, inputs);
        foreach (var x in new[] { "grad_norm", n + ".new", n + ".m.new", n + ".v.new" }) Assert.Contains(x, outputs);
        Assert.AreEqual((3 * Tensors.Length) + 1, g.Outputs.Length);
    }

    [TestMethod]
    public void FusedStepInsideATrainingGraphUsesTheComputedGradient()
    {
        // loss = Σ (x·w − y)², dL/dw = 2 xᵀ (x·w − y); the update is appended to the same graph
        var rng = new Random(9);
        var (x, w0, y) = (GradCheck.Normal(rng, 12), GradCheck.Normal(rng, 6).Select(v => 0.1 * v).ToArray(), GradCheck.Normal(rng, 8));
        var b = new Builder("train_step");
        var xv = b.Input("x", DType.Float32, 4, 3);
        var wv = b.Input("w", DType.Float32, 3, 2);
        var yv = b.Input("y", DType.Float32, 4, 2);
        var diff = b.Sub(b.MatMul(xv, wv), yv);
        var loss = b.ReduceSum(b.Mul(diff, diff));
        var grad = Gradients.Emit(b, loss, [wv])["w"];
        var o = new OptimizerOptions(new AdamWOptions(WeightDecay: 0.01), GradScaleInput: true);
        OptimizerGraph.EmitStep(b, o, [(wv, grad)]);
        using var run = new GraphRunner(OrtRuntime.Cpu, b.Build());
        var r = run.Run(new Dictionary<string, HostTensor>
        {
            ["x"] = HostTensor.Of(x.Select(v => (float)v).ToArray(), 4, 3),
            ["w"] = HostTensor.Of(w0.Select(v => (float)v).ToArray(), 3, 2),
            ["y"] = HostTensor.Of(y.Select(v => (float)v).ToArray(), 4, 2),
            ["w.m"] = HostTensor.Of(new float[6], 3, 2),
            ["w.v"] = HostTensor.Of(new float[6], 3, 2),
            ["step"] = HostTensor.Of(new[] { 1L }),
            ["lr"] = HostTensor.Of(new[] { 0.05f }),
            ["grad_scale"] = HostTensor.Of(new[] { 0.25f }),
        });
        var g = new double[6];
        for (var i = 0; i < 4; i++)
            for (var j = 0; j < 2; j++)
            {
                var d = Enumerable.Range(0, 3).Sum(k => (double)(float)x[(i * 3) + k] * (float)w0[(k * 2) + j]) - (float)y[(i * 2) + j];
                for (var k = 0; k < 3; k++) g[(k * 2) + j] += 0.25 * 2 * (float)x[(i * 3) + k] * d;
            }
        var reference = new ReferenceAdamW(0.9, 0.999, 1e-8, 0.01, null);
        reference.Init([w0.Select(v => (double)(float)v).ToArray()]);
        var (norm, _) = reference.Update([g], (float)0.05);
        Assert.AreEqual(norm, r["grad_norm"].Scalar(), 1e-5 * norm);
        Assert.IsLessThanOrEqualTo(Tol, MaxRelError(r["w.new"].Floats(), reference.P[0]));
        Assert.IsLessThanOrEqualTo(Tol, MaxRelError(r["w.v.new"].Floats(), reference.V[0]));
    }

    [TestMethod]
    public void BadHyperParametersAreUserErrors()
    {
        Assert.ThrowsExactly<UserError>(() => new AdamWOptions(Beta2: 1.0).Validate());
        Assert.ThrowsExactly<UserError>(() => new AdamWOptions(WeightDecay: -0.1).Validate());
        Assert.ThrowsExactly<UserError>(() => OptimizerGraph.Build(Tensors, new OptimizerOptions(new AdamWOptions(), MaxGradNorm: 0)));
    }
}
