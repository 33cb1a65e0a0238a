using MixLoRA.GraphBuilder.Autodiff;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;

namespace MixLoRA.GraphBuilder.Tests.Autodiff;

/// <summary>
/// Direct tests of <see cref="Gradients.Emit"/>: small float64 graphs whose gradients are derived by hand
/// (closed forms written out below in plain C#), the emitted gradient graph run on ORT CPU.
/// </summary>
[TestClass]
public sealed class GradientsTests
{
    private const double Tol = 1e-12;

    private static double[] Seq(int n, double start, double step) => Enumerable.Range(0, n).Select(i => start + (i * step)).ToArray();

    private static Dictionary<string, HostTensor> Run(Builder b, Dictionary<string, HostTensor> feeds)
    {
        using var r = new GraphRunner(OrtRuntime.Cpu, b.Build());
        return r.Run(feeds);
    }

    private static void AssertClose(double[] expected, double[] actual, string what, double tol = Tol)
    {
        Assert.HasCount(expected.Length, actual, what);
        for (var i = 0; i < expected.Length; i++) Assert.AreEqual(expected[i], actual[i], tol * Math.Max(1, Math.Abs(expected[i])), $"{what}[{i}]");
    }

    /// <summary>
    /// L = Σ (X·W + b)², X (N, D), W (D, M), b (M). With Z = X·W + b: ∂L/∂Z = 2Z, so
    /// ∂L/∂W = Xᵀ·2Z, ∂L/∂b = Σ_n 2Z[n, :], ∂L/∂X = 2Z·Wᵀ.
    /// </summary>
    [TestMethod]
    public void AffineSquaredSumMatchesTheHandDerivedGradient()
    {
        const int N = 3, D = 4, M = 2;
        var xv = Seq(N * D, -0.7, 0.13);
        var wv = Seq(D * M, 0.4, -0.11);
        var bv = new[] { 0.25, -0.5 };

        var b = new Builder("affine");
        var x = b.Input("x", DType.Float64, Shape.Of(N, D));
        var w = b.Input("w", DType.Float64, Shape.Of(D, M));
        var bias = b.Input("b", DType.Float64, Shape.Of(M));
        var z = b.Add(b.MatMul(x, w), bias);
        var loss = b.ReduceSum(b.Mul(z, z));
        b.Output(loss, "loss");
        var grads = Gradients.Emit(b, loss, [x, w, bias]);
        b.Output(grads["x"], "dx");
        b.Output(grads["w"], "dw");
        b.Output(grads["b"], "db");
        var outs = Run(b, new() { ["x"] = HostTensor.Of(xv, N, D), ["w"] = HostTensor.Of(wv, D, M), ["b"] = HostTensor.Of(bv, M) });

        // reference in float64
        var zr = new double[N * M];
        for (var n = 0; n < N; n++)
            for (var m = 0; m < M; m++)
            {
                var s = bv[m];
                for (var d = 0; d < D; d++) s += xv[(n * D) + d] * wv[(d * M) + m];
                zr[(n * M) + m] = s;
            }
        var dz = zr.Select(v => 2 * v).ToArray();
        var dw = new double[D * M];
        var db = new double[M];
        var dx = new double[N * D];
        for (var n = 0; n < N; n++)
            for (var m = 0; m < M; m++)
            {
                db[m] += dz[(n * M) + m];
                for (var d = 0; d < D; d++)
                {
                    dw[(d * M) + m] += xv[(n * D) + d] * dz[(n * M) + m];
                    dx[(n * D) + d] += dz[(n * M) + m] * wv[(d * M) + m];
                }
            }
        Assert.AreEqual(zr.Sum(v => v * v), outs["loss"].Scalar(), Tol * zr.Sum(v => v * v));
        AssertClose(dw, outs["dw"].Doubles(), "dL/dW");
        AssertClose(db, outs["db"].Doubles(), "dL/db");
        AssertClose(dx, outs["dx"].Doubles(), "dL/dX");
        CollectionAssert.AreEqual(new long[] { D, M }, outs["dw"].Shape);
        CollectionAssert.AreEqual(new long[] { M }, outs["db"].Shape, "the bias gradient is summed back over the broadcast rows");
    }

    /// <summary>
    /// Fan-in: h = exp(x) feeds two consumers, and one of them (h·h) reads it twice.
    /// L = Σ c⊙h + Σ h⊙h ⇒ ∂L/∂h = c + 2h, ∂L/∂x = (c + 2h)⊙exp(x). Dropping any one contribution
    /// (c, h or h) gives a different number.
    /// </summary>
    [TestMethod]
    public void FanInSumsEveryConsumersContribution()
    {
        var xv = Seq(6, -1.2, 0.45);
        var cv = Seq(6, 0.9, -0.3);
        var b = new Builder("fanin");
        var x = b.Input("x", DType.Float64, Shape.Of(2, 3));
        var c = b.Input("c", DType.Float64, Shape.Of(2, 3));
        var h = b.Exp(x);
        var loss = b.Add(b.ReduceSum(b.Mul(c, h)), b.ReduceSum(b.Mul(h, h)));
        b.Output(loss, "loss");
        b.Output(Gradients.Emit(b, loss, [x])["x"], "dx");
        var outs = Run(b, new() { ["x"] = HostTensor.Of(xv, 2, 3), ["c"] = HostTensor.Of(cv, 2, 3) });

        var expected = xv.Select((v, i) => (cv[i] + (2 * Math.Exp(v))) * Math.Exp(v)).ToArray();
        AssertClose(expected, outs["dx"].Doubles(), "dL/dx");
    }

    /// <summary>
    /// Only W is requested out of X, W, b: the result holds W alone (with the value of the full case), no
    /// MatMul for ∂L/∂X is emitted (X is frozen), and a requested parameter off the loss path gets zeros.
    /// </summary>
    [TestMethod]
    public void OnlyRequestedParametersAreDifferentiated()
    {
        const int N = 2, D = 3, M = 2;
        var xv = Seq(N * D, 0.3, -0.2);
        var wv = Seq(D * M, -0.5, 0.17);
        var bv = new[] { 0.1, 0.2 };
        var b = new Builder("partial");
        var x = b.Input("x", DType.Float64, Shape.Of(N, D));
        var w = b.Input("w", DType.Float64, Shape.Of(D, M));
        var bias = b.Input("b", DType.Float64, Shape.Of(M));
        var unused = b.Input("unused", DType.Float64, Shape.Of(4));
        var z = b.Add(b.MatMul(x, w), bias);
        var loss = b.ReduceSum(b.Mul(z, z));
        b.Output(loss, "loss");
        var before = b.Nodes.Count;
        var grads = Gradients.Emit(b, loss, [w, unused]);
        CollectionAssert.AreEquivalent(new[] { "w", "unused" }, grads.Keys.ToArray());
        var backward = b.Nodes.Skip(before).ToList();
        Assert.AreEqual(1, backward.Count(n => n.OpType == "MatMul"), "only Xᵀ·dZ: no gradient MatMul for the frozen X: " + string.Join(", ", backward.Select(n => n.OpType)));
        b.Output(grads["w"], "dw");
        b.Output(grads["unused"], "dunused");
        var outs = Run(b, new()
        {
            ["x"] = HostTensor.Of(xv, N, D), ["w"] = HostTensor.Of(wv, D, M), ["b"] = HostTensor.Of(bv, M), ["unused"] = HostTensor.Of(new double[] { 1, 2, 3, 4 }, 4),
        });
        var dw = new double[D * M];
        for (var n = 0; n < N; n++)
            for (var m = 0; m < M; m++)
            {
                var zz = bv[m];
                for (var d = 0; d < D; d++) zz += xv[(n * D) + d] * wv[(d * M) + m];
                for (var d = 0; d < D; d++) dw[(d * M) + m] += xv[(n * D) + d] * 2 * zz;
            }
        AssertClose(dw, outs["dw"].Doubles(), "dL/dW");
        CollectionAssert.AreEqual(new double[4], outs["dunused"].Doubles(), "off the loss path: zeros");
    }

    /// <summary>
    /// Integer and boolean paths carry no gradient: L = Σ w⊙TopK₂(x).values + Σ float(TopK₂(x).indices)
    /// + Σ float(x &gt; 0)⊙x. By hand: ∂L/∂x = w scattered to the top-2 positions of each row, plus [x &gt; 0]
    /// (the mask is a constant); the index sum and the mask itself contribute nothing.
    /// </summary>
    [TestMethod]
    public void IntegerAndBooleanPathsCarryNoGradient()
    {
        // rows with distinct values, so the top-2 positions are unambiguous
        var xv = new[] { 0.5, -1.0, 2.0, 0.1, -0.3, -2.0, 1.5, 0.7 };
        var wv = new[] { 3.0, 5.0, 7.0, 11.0 };
        var b = new Builder("topk");
        var x = b.Input("x", DType.Float64, Shape.Of(2, 4));
        var w = b.Input("w", DType.Float64, Shape.Of(2, 2));
        var (values, indices) = b.TopK(x, 2);
        var positive = b.Cast(b.Greater(x, b.Scalar(0, DType.Float64)), DType.Float64);
        var loss = b.Add(b.Add(b.ReduceSum(b.Mul(values, w)), b.ReduceSum(b.Cast(indices, DType.Float64))), b.ReduceSum(b.Mul(positive, x)));
        b.Output(loss, "loss");
        b.Output(Gradients.Emit(b, loss, [x])["x"], "dx");
        var outs = Run(b, new() { ["x"] = HostTensor.Of(xv, 2, 4), ["w"] = HostTensor.Of(wv, 2, 2) });

        var expected = new double[8];
        for (var r = 0; r < 2; r++)
        {
            var order = Enumerable.Range(0, 4).OrderByDescending(j => xv[(r * 4) + j]).Take(2).ToArray();   // top-2, largest first
            for (var k = 0; k < 2; k++) expected[(r * 4) + order[k]] += wv[(r * 2) + k];
        }
        for (var i = 0; i < 8; i++) expected[i] += xv[i] > 0 ? 1 : 0;
        // row 0: top-2 are 2.0 (j=2, takes w 3) and 0.5 (j=0, takes w 5); row 1: 1.5 (j=2, 7) and 0.7 (j=3, 11)
        CollectionAssert.AreEqual(new[] { 5.0 + 1, 0, 3.0 + 1, 1, 0, 0, 7.0 + 1, 11.0 + 1 }, expected, "hand check of the reference");
        AssertClose(expected, outs["dx"].Doubles(), "dL/dx");
    }

    /// <summary>StopGradient (detach): L = Σ x⊙stop(x) ⇒ ∂L/∂x = x, not 2x.</summary>
    [TestMethod]
    public void StopGradientCutsThePath()
    {
        var xv = new[] { 1.5, -2.0, 0.25 };
        var b = new Builder("stop");
        var x = b.Input("x", DType.Float64, Shape.Of(3));
        var loss = b.ReduceSum(b.Mul(x, b.StopGradient(x)));
        b.Output(loss, "loss");
        b.Output(Gradients.Emit(b, loss, [x])["x"], "dx");
        AssertClose(xv, Run(b, new() { ["x"] = HostTensor.Of(xv, 3) })["dx"].Doubles(), "dL/dx");
    }

    /// <summary>A float op with no gradient rule on a parameter's path fails, naming the op and the node.</summary>
    [TestMethod]
    public void MissingRuleOnAParameterPathFailsNamingTheNode()
    {
        var b = new Builder("norule");
        var x = b.Input("x", DType.Float64, Shape.Of(3));
        var noise = b.RandomUniformLike(x, 0, 1);
        var loss = b.ReduceSum(b.Mul(x, noise));
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => Gradients.Emit(b, loss, [x]));
        StringAssert.Contains(e.Message, "no gradient rule for RandomUniformLike");
        StringAssert.Contains(e.Message, $"node '{noise.Name}'");
        StringAssert.Contains(e.Message, "random noise");

        // the same op off every parameter path (fed by a non-requested input) is fine
        var ok = new Builder("norule-off-path");
        var p = ok.Input("p", DType.Float64, Shape.Of(3));
        var other = ok.Input("other", DType.Float64, Shape.Of(3));
        var l2 = ok.ReduceSum(ok.Mul(p, ok.RandomUniformLike(other, 0, 1)));
        Assert.HasCount(1, Gradients.Emit(ok, l2, [p]));
    }
}
