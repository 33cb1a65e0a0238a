using MixLoRA.GraphBuilder.Autodiff;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;

namespace MixLoRA.GraphBuilder.Tests.Autodiff;

/// <summary>
/// Recomputation segments (<see cref="Segments"/>, Autodiff's; the builder only records them): which node ranges
/// are recorded, and that recomputing them for the backward leaves the forward as it was and the gradients equal.
/// </summary>
[TestClass]
public sealed class SegmentsTests
{
    [TestMethod]
    public void TheNodesEmittedInsideARecordAreOneSegment()
    {
        var b = new Builder("segments");
        var x = b.Input("x", DType.Float32, 3);
        var y = b.Mul(x, x);
        using (b.Segment())
        {
            y = b.Add(y, x);
            y = b.Mul(y, x);
        }
        using (b.Segment())
        {
            // nothing emitted: nothing recorded
        }
        var last = b.Segment();
        y = b.Sin(y);
        last.Dispose();
        last.Dispose();                                                                     // closing twice records once
        b.Output(y, "y");
        CollectionAssert.AreEqual(new[] { (1, 3), (3, 4) }, b.Segments.Ranges.ToArray());
    }

    /// <summary>
    /// f = Σ sin(w·x)·w over two segments (one per "layer"): the checkpointed backward re-emits each segment
    /// (nodes named recompute/...), keeps the forward's nodes unchanged and gives the stored backward's gradient.
    /// </summary>
    [TestMethod]
    public void RecomputedSegmentsGiveTheStoredGradient()
    {
        (Graph Graph, int Forward) Build(bool recompute)
        {
            var b = new Builder("two_layers");
            var h = b.Input("x", DType.Float64, 4);
            var w = b.Input("w", DType.Float64, 4);
            for (var l = 0; l < 2; l++)
            {
                using (b.Segment()) h = b.Mul(b.Sin(b.Mul(h, w)), w);
            }
            var loss = b.ReduceSum(h);
            b.Output(loss, "loss");
            var forward = b.Nodes.Count;
            b.Output(Gradients.Emit(b, loss, [w], recompute: recompute)["w"], "dw");
            return (b.Build(), forward);
        }
        var (stored, n) = Build(false);
        var (recomputed, m) = Build(true);
        Assert.AreEqual(n, m);
        static string Show(Node x) => $"{x.Name} {x.OpType} ({string.Join(", ", x.Inputs)}) -> ({string.Join(", ", x.Outputs)})";
        CollectionAssert.AreEqual(stored.Nodes.Take(n).Select(Show).ToArray(), recomputed.Nodes.Take(n).Select(Show).ToArray(), "the forward is the same");
        Assert.IsTrue(recomputed.Nodes.Skip(n).Any(x => x.Name.Contains("recompute", StringComparison.Ordinal)), "the segments are emitted again");
        Assert.IsFalse(stored.Nodes.Any(x => x.Name.Contains("recompute", StringComparison.Ordinal)));
        var feeds = new Dictionary<string, HostTensor>
        {
            ["x"] = HostTensor.Of(new[] { 0.3, -0.2, 0.9, 1.4 }, 4), ["w"] = HostTensor.Of(new[] { 0.5, 1.1, -0.7, 0.2 }, 4),
        };
        using var a = new GraphRunner(OrtRuntime.Cpu, stored);
        using var c = new GraphRunner(OrtRuntime.Cpu, recomputed);
        var (want, got) = (a.Run(feeds)["dw"].Doubles(), c.Run(feeds)["dw"].Doubles());
        for (var i = 0; i < 4; i++) Assert.AreEqual(want[i], got[i], 1e-12, $"dw[{i}]");
    }
}
