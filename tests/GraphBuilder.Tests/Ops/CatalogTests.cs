using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Tests.Ops;

[TestClass]
public sealed class CatalogTests
{
    public static IEnumerable<object[]> AllCases() =>
        Catalog.All.Where(d => d.Grad != null).SelectMany(d => d.Cases.Select(c => new object[] { d.Key, c.Label }));

    [TestMethod]
    public void EveryOpHasARuleOrAReason()
    {
        var bad = Catalog.All.Where(d => (d.Grad == null) == (d.NoGradReason == null)).Select(d => d.Key).ToArray();
        Assert.IsEmpty(bad, "ops need exactly one of Grad / NoGradReason: " + string.Join(", ", bad));
    }

    [TestMethod]
    public void EveryRuleHasAGradientCheckCase()
    {
        var bad = Catalog.All.Where(d => d.Grad != null && d.Cases.IsEmpty).Select(d => d.Key).ToArray();
        Assert.IsEmpty(bad, "ops with a gradient rule but no gradient-check case: " + string.Join(", ", bad));
    }

    [TestMethod]
    public void CatalogHasTheRequiredPrimitives()
    {
        string[] required = ["MatMul", "Add", "Sub", "Mul", "Div", "Neg", "Pow", "Sqrt", "Exp", "Log", "Sigmoid", "Tanh",
            "Softmax", "LogSoftmax", "ReduceSum", "ReduceMean", "ReduceMax", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
            "Concat", "Slice", "Split", "Expand", "Gather", "GatherElements", "ScatterElements", "Where", "Cast", "TopK",
            "Equal", "Trilu", "Dropout"];
        var missing = required.Where(r => Catalog.Find(r) == null).ToArray();
        Assert.IsEmpty(missing, "missing: " + string.Join(", ", missing));
    }

    [TestMethod]
    [DynamicData(nameof(AllCases))]
    public void GradientMatchesFiniteDifferences(string op, string label)
    {
        var def = Catalog.Find(op)!;
        var c = def.Cases.Single(x => x.Label == label);
        const int seed = 1234;
        var r = GradCheck.Run(c, seed);
        var shapes = string.Join(" ", c.Inputs.Select(s => "(" + string.Join(",", s.Dims) + ")"));
        Assert.IsLessThanOrEqualTo(c.Tol, r.MaxError, $"{op} [{label}] shapes {shapes} seed {seed}: max error {r.MaxError:G3} at {r.Worst}");
    }
}
