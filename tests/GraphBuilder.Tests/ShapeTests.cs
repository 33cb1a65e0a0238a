using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Tests;

[TestClass]
public sealed class ShapeTests
{
    [TestMethod]
    public void SymbolicDimsCompareBySymbol()
    {
        var a = Shape.Of("B", "T", 64);
        var b = Shape.Of("B", "T", 64);
        Assert.IsTrue(a.SameAs(b));
        Assert.IsFalse(a.SameAs(Shape.Of("B", "S", 64)));
        Assert.AreEqual("(B, T, 64)", a.ToString());
    }
}
