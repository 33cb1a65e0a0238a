using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;

namespace MixLoRA.GraphBuilder.Tests.Building;

/// <summary>Builder.Build folds an output's rename into its producer when nothing else reads the value.</summary>
[TestClass]
public sealed class OutputRenameTests
{
    [TestMethod]
    public void RenamedOutputsAreWrittenByTheirProducerUnlessTheValueIsShared()
    {
        var b = new Builder("rename");
        var x = b.Input("x", DType.Float32, Shape.Of(2, 3));
        var y = b.Neg(x);                                   // only the rename reads y: folded
        var z = b.Exp(x);                                   // z is also read by Add: Identity kept
        b.Output(y, "neg");
        b.Output(z, "exp");
        b.Output(b.Add(z, x), "sum");                       // Add's output feeds only its rename: folded
        b.Output(x, "copy");                                // a graph input: Identity kept
        var g = b.Build();

        var identities = g.Nodes.Where(n => n.OpType == "Identity").Select(n => n.Outputs[0]).Order().ToArray();
        CollectionAssert.AreEqual(new[] { "copy", "exp" }, identities);
        Assert.AreEqual("neg", g.Nodes.Single(n => n.OpType == "Neg").Outputs[0]);
        Assert.AreEqual("sum", g.Nodes.Single(n => n.OpType == "Add").Outputs[0]);

        var data = new float[] { 0.5f, -1, 2, 0, 1.5f, -0.25f };
        using var run = new GraphRunner(OrtRuntime.Cpu, g);
        var outs = run.Run(new Dictionary<string, HostTensor> { ["x"] = HostTensor.Of(data, 2, 3) });
        for (var i = 0; i < data.Length; i++)
        {
            Assert.AreEqual(-data[i], outs["neg"].Floats()[i]);
            Assert.AreEqual(MathF.Exp(data[i]), outs["exp"].Floats()[i], 1e-6f);
            Assert.AreEqual(MathF.Exp(data[i]) + data[i], outs["sum"].Floats()[i], 1e-6f);
            Assert.AreEqual(data[i], outs["copy"].Floats()[i]);
        }
    }
}
