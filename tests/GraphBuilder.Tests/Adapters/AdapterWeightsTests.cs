using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Tests.Fixtures;

namespace MixLoRA.GraphBuilder.Tests.Adapters;

[TestClass]
public sealed class AdapterWeightsTests
{
    private static void AssertEqual(AdapterWeights a, AdapterWeights b, bool sameOrder)
    {
        Assert.AreEqual(a.Count, b.Count);
        if (sameOrder) CollectionAssert.AreEqual(a.Keys.ToArray(), b.Keys.ToArray());
        foreach (var (k, v) in a)
        {
            Assert.IsTrue(b.TryGetValue(k, out var w), k);
            Assert.AreEqual(v.DType, w.DType, k);
            CollectionAssert.AreEqual(v.Shape, w.Shape, k);
            CollectionAssert.AreEqual(v.Data, w.Data, k);
        }
    }

    [TestMethod]
    public void ParityAdapterLoadsTheSameFromSafetensorsAndBin()
    {
        var dir = Repo.Parity("llama-basic", "adapter_init");
        var st = AdapterWeights.Load(dir);
        var bin = AdapterWeights.Load(Path.Combine(dir, AdapterWeights.BinName));
        AssertEqual(st, bin, sameOrder: false);
        var gate = st["mixlora.layers.1.mlp.moe_gate.weight"];
        Assert.AreEqual(DType.Float32, gate.DType);
        CollectionAssert.AreEqual(new long[] { 4, 64 }, gate.Shape);
        using var f = new SafetensorsFile(Path.Combine(dir, AdapterWeights.SafetensorsName));
        CollectionAssert.AreEqual(f.ReadFloat32("mixlora.layers.1.mlp.moe_gate.weight"), gate.Data);
        var e = Assert.ThrowsExactly<UserError>(() => st["mixlora.layers.9.mlp.moe_gate.weight"]);
        StringAssert.Contains(e.Message, "layers.9");
    }

    [TestMethod]
    public void SavesBothFormatsAndPrefersSafetensorsOnLoad()
    {
        var w = new AdapterWeights();
        w.Set("b.lora_A.weight", [2, 2], [1, 2, 3, 4]);
        w.Set("a.lora_B.weight", [2], [0.5f, -1], DType.BFloat16);
        var dir = Repo.TempDir("aw");
        w.Save(dir, AdapterWeightFormats.Both);
        AssertEqual(w, AdapterWeights.Load(dir), sameOrder: false);
        AssertEqual(w, AdapterWeights.Load(Path.Combine(dir, AdapterWeights.BinName)), sameOrder: true);
        // with only the .bin present, Load(dir) falls back to it
        File.Delete(Path.Combine(dir, AdapterWeights.SafetensorsName));
        AssertEqual(w, AdapterWeights.Load(dir), sameOrder: true);
        File.Delete(Path.Combine(dir, AdapterWeights.BinName));
        StringAssert.Contains(Assert.ThrowsExactly<UserError>(() => AdapterWeights.Load(dir)).Message, dir);
        Directory.Delete(dir, true);
    }
}
