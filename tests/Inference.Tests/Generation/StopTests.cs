using MixLoRA.Cli;
using MixLoRA.GraphBuilder;
using MixLoRA.Inference.Export;
using MixLoRA.Inference.Generation;
using MixLoRA.Inference.Tests.Fixtures;

namespace MixLoRA.Inference.Tests.Generation;

/// <summary>Generation stops at generation_config.json's EOS ids (a list too), and a prompt longer than the context is refused.</summary>
[TestClass]
public sealed class StopTests
{
    [TestMethod]
    public void GenerationConfigEosIdsStopGeneration()
    {
        var dir = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir())).OutDir;
        var prompt = new SmallTokenizer().Encode("The cat sat");
        IReadOnlyList<int> Run()
        {
            using var m = new ExportedModel(dir);
            return new Generator(m, new SmallTokenizer()).Generate(prompt, new SamplingOptions(MaxNewTokens: 6));
        }
        var free = Run();
        Assert.HasCount(6, free, "without a stop id the greedy run should use its whole budget here");
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), $"{{\"eos_token_id\": [100000, {free[2]}]}}");
        var stopped = Run();
        var first = free.ToList().IndexOf(free[2]);                                            // the stop id may come earlier too
        CollectionAssert.AreEqual(free.Take(first + 1).ToArray(), stopped.ToArray(), "greedy decoding stops at the first stop id it emits");
        Assert.IsLessThan(free.Count, stopped.Count);
    }

    [TestMethod]
    public void APromptLongerThanTheContextIsRefused()
    {
        var dir = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir())).OutDir;
        using var m = new ExportedModel(dir);
        var prompt = Enumerable.Repeat(5, m.Config.MaxPositionEmbeddings + 3).ToArray();
        var e = Assert.ThrowsExactly<UserError>(() => new Generator(m, new SmallTokenizer()).Generate(prompt, new SamplingOptions(MaxNewTokens: 2)));
        StringAssert.Contains(e.Message, $"{prompt.Length} tokens");
        StringAssert.Contains(e.Message, $"{m.Config.MaxPositionEmbeddings}");
    }

    [TestMethod]
    [DoNotParallelize]
    public void APromptFileGivesTheSameTextAsThePromptFlag()
    {
        var dir = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir())).OutDir;
        var services = new CommandServices(_ => new SmallTokenizer());
        var file = Path.Combine(Files.TempDir(), "prompt.txt");
        File.WriteAllText(file, "The cat sat");
        string Run(params string[] args)
        {
            var (w, old) = (new StringWriter(), Console.Out);
            Console.SetOut(w);
            try
            {
                Assert.AreEqual(0, Commands.Run(["generate", "--model", dir, "--max-new-tokens", "4", .. args], services));
            }
            finally
            {
                Console.SetOut(old);
            }
            return w.ToString();
        }
        Assert.AreEqual(Run("--prompt", "The cat sat"), Run("--prompt-file", file));
        Assert.AreEqual(1, Commands.Run(["generate", "--model", dir, "--prompt", "x", "--prompt-file", file], services));
        Assert.AreEqual(1, Commands.Run(["generate", "--model", dir], services));
    }
}
