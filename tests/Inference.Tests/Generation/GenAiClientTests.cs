using Microsoft.ML.OnnxRuntimeGenAI;
using MixLoRA.Cli.Demo;
using MixLoRA.Inference.Export;
using MixLoRA.Inference.Generation;
using MixLoRA.Inference.Tests.Fixtures;
using MixLoRA.Runtime;
using MixLoRA.Text.Tokenization;
using Generator = MixLoRA.Inference.Generation.Generator;

namespace MixLoRA.Inference.Tests.Generation;

/// <summary>
/// ONNX Runtime GenAI 0.20 (Microsoft.ML.OnnxRuntimeGenAI) as an outside client of our exports (issue 15 item 4),
/// on the embedded demo's model and a briefly trained MixLoRA adapter, exported in fp32: GenAI loads the folder
/// from its genai_config.json, its tokenizer (onnxruntime-extensions) reads tokenizer.json + the derived
/// tokenizer_config.json and gives <see cref="HfTokenizer"/>'s ids, its greedy search gives the tokens of
/// <see cref="Generator"/> (the path mixlora-generate runs), and an adapter.onnx_adapter activated through its
/// Adapters API changes them as mixlora-generate --adapter does. Expected values are always our own outputs.
/// GenAI runs in this process: its native library loads the libonnxruntime.so (ORT 1.32) the other tests use.
/// </summary>
[TestClass]
public sealed class GenAiClientTests
{
    private const int NewTokens = 6, Seed = 7;

    private static readonly Lazy<DemoResult> Demo = new(() => DemoCommand.Execute(
        new DemoCommand.DemoSettings(Path.Combine(Files.TempDir(), "demo"), Steps: 30, Lr: 3e-3, Seed, Device.Cpu, Quiet: true), TextWriter.Null));

    /// <summary>The first prompt of each demo task (arithmetic, copy, ARC), as the demo trains on them.</summary>
    private static string[] Prompts() => [.. DemoCorpus.Generate(Seed).Select(t => t.Texts[0].Prompt)];

    private static string ExportDemo(string? adapterDir = null, bool onnxAdapter = false) =>
        Exporter.Export(new ExportOptions(Demo.Value.ModelDir, Files.TempDir()) { AdapterDir = adapterDir, OnnxAdapter = onnxAdapter }).OutDir;

    [TestMethod]
    public void GenAiTokenizerReadsTheExportAndGivesOurIds()
    {
        // the demo folder's own tokenizer_config.json is copied; a folder without one gets it derived by the export
        var bare = Files.TempDir();
        foreach (var f in Directory.GetFiles(Demo.Value.ModelDir).Where(f => Path.GetFileName(f) != TokenizerConfigFile.FileName))
            File.Copy(f, Path.Combine(bare, Path.GetFileName(f)));
        var copied = ExportDemo();
        var derived = Exporter.Export(new ExportOptions(bare, Files.TempDir())).OutDir;
        Assert.AreEqual(File.ReadAllText(Path.Combine(Demo.Value.ModelDir, TokenizerConfigFile.FileName)),
            File.ReadAllText(Path.Combine(derived, TokenizerConfigFile.FileName)), "the export derives what the demo writes");

        string[] texts = [.. Prompts(), "café! 日本 naïve", "  two  spaces, (brackets) [x] 12345 3.14\n\nend ", " leading space", "<s>inline</s> specials"];
        foreach (var dir in new[] { copied, derived })
        {
            var ours = HfTokenizer.FromDirectory(dir);
            using var model = new Model(dir);
            using var tokenizer = new Tokenizer(model);
            foreach (var addSpecial in new[] { false, true })
            {
                // GenAI encodes without special tokens unless told (its default); HF's default is with them
                if (addSpecial) tokenizer.UpdateOptions(new Dictionary<string, string> { ["add_special_tokens"] = "true" });
                foreach (var text in texts)
                {
                    using var seqs = tokenizer.Encode(text);
                    CollectionAssert.AreEqual(ours.Encode(text, addSpecial).ToArray(), seqs[0].ToArray(), $"{dir}, add_special_tokens {addSpecial}: '{text}'");
                }
            }
        }
    }

    [TestMethod]
    public void GreedyGenerationOfTheMixLoraExportIsTokenForTokenOurs()
    {
        var dir = ExportDemo(Demo.Value.Summary.AdapterDir);
        var ours = Ours(dir, null);
        var genai = GenAi(dir, null, null);
        for (var i = 0; i < ours.Length; i++) CollectionAssert.AreEqual(ours[i], genai[i], $"prompt {i}: ours {string.Join(",", ours[i])}, GenAI {string.Join(",", genai[i])}");
    }

    [TestMethod]
    public void OnnxAdapterThroughGenAiAdaptersApiChangesTheOutputAsOurGenerateDoes()
    {
        // one base graph whose adapter defaults are the untrained (no-op, B = 0) adapter; the trained adapter
        // arrives only as the .onnx_adapter file of another --onnx-adapter export
        var baseDir = ExportDemo();
        var initDir = ExportDemo(Path.Combine(Demo.Value.ArtifactsDir, "adapter_init"), onnxAdapter: true);
        var loraFile = Path.Combine(ExportDemo(Demo.Value.Summary.AdapterDir, onnxAdapter: true), Exporter.AdapterFile);

        var oursBase = Ours(baseDir, null);
        var oursPlain = Ours(initDir, null);
        var oursAdapted = Ours(initDir, loraFile);
        var genaiBase = GenAi(baseDir, null, null);
        var (genaiPlain, genaiAdapted) = (GenAi(initDir, loraFile, null), GenAi(initDir, loraFile, "demo"));
        for (var i = 0; i < oursBase.Length; i++)
        {
            CollectionAssert.AreEqual(oursBase[i], genaiBase[i], $"prompt {i}, base export");
            CollectionAssert.AreEqual(oursPlain[i], genaiPlain[i], $"prompt {i}, no adapter active");
            CollectionAssert.AreEqual(oursAdapted[i], genaiAdapted[i], $"prompt {i}, adapter active: ours {string.Join(",", oursAdapted[i])}, GenAI {string.Join(",", genaiAdapted[i])}");
            CollectionAssert.AreEqual(oursBase[i], oursPlain[i], $"prompt {i}: the untrained adapter is a no-op");
            CollectionAssert.AreNotEqual(oursBase[i], oursAdapted[i], $"prompt {i}: the trained adapter changes the greedy tokens");
        }
    }

    /// <summary>Greedy new ids per prompt from our side: what `mixlora-generate --model DIR [--adapter FILE]` runs.</summary>
    private static int[][] Ours(string dir, string? onnxAdapter)
    {
        using var source = ModelSource.Open(dir, onnxAdapter, OrtRuntime.Cpu);
        var tokenizer = HfTokenizer.FromDirectory(dir);
        var generator = new Generator(source.Model, tokenizer);
        return [.. Prompts().Select(p => generator.Generate(tokenizer.Encode(p), new SamplingOptions(MaxNewTokens: NewTokens)).ToArray())];
    }

    /// <summary>Greedy new ids per prompt from GenAI; with <paramref name="adapterName"/> the loaded adapter is active.</summary>
    private static int[][] GenAi(string dir, string? adapterFile, string? adapterName)
    {
        using var model = new Model(dir);
        using var tokenizer = new Tokenizer(model);
        tokenizer.UpdateOptions(new Dictionary<string, string> { ["add_special_tokens"] = "true" });
        using var adapters = new Adapters(model);
        if (adapterFile != null) adapters.LoadAdapter(adapterFile, adapterName ?? "loaded");
        var results = new List<int[]>();
        foreach (var prompt in Prompts())
        {
            using var seqs = tokenizer.Encode(prompt);
            var ids = seqs[0].ToArray();
            using var options = new GeneratorParams(model);
            options.SetSearchOption("do_sample", false);
            options.SetSearchOption("max_length", ids.Length + NewTokens);
            using var generator = new Microsoft.ML.OnnxRuntimeGenAI.Generator(model, options);
            if (adapterName != null) generator.SetActiveAdapter(adapters, adapterName);
            generator.AppendTokens(ids);
            while (!generator.IsDone()) generator.GenerateNextToken();
            results.Add(generator.GetSequence(0)[ids.Length..].ToArray());
        }
        return [.. results];
    }
}
