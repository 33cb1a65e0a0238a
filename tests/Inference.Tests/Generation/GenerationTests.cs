using MixLoRA.Inference.Export;
using MixLoRA.Inference.Generation;
using MixLoRA.Inference.Tests.Fixtures;

namespace MixLoRA.Inference.Tests.Generation;

/// <summary>Decoding with the cache against full forwards of the training-side graph.</summary>
[TestClass]
public sealed class GenerationTests
{
    private static string? _exported;

    private static string Exported() => _exported ??= Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir())).OutDir;

    [TestMethod]
    public void GreedyTokensAreTheArgmaxOfFullForwardLogitsAtEveryStep()
    {
        using var m = new ExportedModel(Exported());
        var prompt = new SmallTokenizer().Encode("The cat sat");
        var generated = new Generator(m, new SmallTokenizer()).Generate(prompt, new SamplingOptions(MaxNewTokens: 8));
        Assert.IsNotEmpty(generated);
        var seq = prompt.Select(i => (long)i).ToList();
        foreach (var next in generated)
        {
            var logits = Reference.ForwardLogits(Files.ParityModel, [.. seq], Enumerable.Repeat(1L, seq.Count).ToArray(), 1);
            var v = m.Config.VocabSize;
            var last = logits.AsSpan((seq.Count - 1) * v, v);
            var best = 0;
            for (var k = 1; k < v; k++) if (last[k] > last[best]) best = k;
            Assert.AreEqual(best, next, $"step {seq.Count - prompt.Count}");
            seq.Add(next);
        }
        Assert.IsTrue(generated.Count == 8 || generated[^1] == SmallTokenizer.Eos, "stops at max-new-tokens or EOS only");
    }

    [TestMethod]
    public void StreamedTextIsTheDecodedContinuation()
    {
        using var m = new ExportedModel(Exported());
        var tok = new SmallTokenizer();
        var gen = new Generator(m, tok);
        var ids = gen.Generate(tok.Encode("Hello"), new SamplingOptions(MaxNewTokens: 6));
        using var writer = new StringWriter();
        var text = gen.GenerateText("Hello", new SamplingOptions(MaxNewTokens: 6), writer);
        Assert.AreEqual(tok.Decode(ids.Where(i => i != SmallTokenizer.Eos).ToList(), skipSpecialTokens: true), text);
        Assert.AreEqual(text, writer.ToString());
    }

    [TestMethod]
    public void SamplingIsSeededAndATinyNucleusIsGreedy()
    {
        var rng = new Random(5);
        var logits = Enumerable.Range(0, 50).Select(_ => (float)rng.NextDouble() * 4).ToArray();
        var argmax = Generator.ArgMax(logits);
        var sampled = new SamplingOptions(Temperature: 1.0, TopP: 0.95);
        int[] Draw(int seed)
        {
            var r = new Random(seed);
            return Enumerable.Range(0, 20).Select(_ => Generator.Pick(logits, sampled, r)).ToArray();
        }
        CollectionAssert.AreEqual(Draw(9), Draw(9));
        Assert.IsGreaterThan(1, Draw(9).Distinct().Count(), "sampling draws more than one token");
        Assert.AreEqual(argmax, Generator.Pick(logits, new SamplingOptions(Temperature: 1.0, TopP: 1e-6), new Random(1)));
        Assert.AreEqual(argmax, Generator.Pick(logits, new SamplingOptions(), new Random(1)));
    }
}
