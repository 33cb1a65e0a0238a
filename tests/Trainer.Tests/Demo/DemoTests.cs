using System.Text;
using System.Text.RegularExpressions;
using MixLoRA.Cli;
using MixLoRA.Cli.Demo;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.Text.Tokenization;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Tests.Training;

namespace MixLoRA.Trainer.Tests.Demo;

/// <summary>
/// The embedded demo (issue 5 item 6): `mixlora-train` without --artifacts generates a model, tokenizer.json
/// and dataset, builds and trains a MixLoRA adapter with a falling loss, and prints where its outputs are.
/// </summary>
[TestClass]
[DoNotParallelize]
public sealed class DemoTests
{
    [TestMethod]
    public void TrainWithoutArtifactsRunsTheDemoAndTheLossFalls()
    {
        var root = Path.Combine(TestFiles.TempDir(), "demo");
        var (code, stdout) = CaptureOut(() => Commands.Run(["train", "--out", root, "--steps", "30", "--quiet"]));
        Assert.AreEqual(0, code, stdout);

        var losses = TrainFixture.Losses(Path.Combine(root, "run"));
        Assert.HasCount(30, losses);
        var (first, last) = (losses.Take(5).Average(), losses.TakeLast(5).Average());
        Assert.IsLessThan(first - 1.0, last, $"mean loss of the first 5 steps {first:F3}, of the last 5 {last:F3}");

        var adapter = Path.Combine(root, "run", "adapter");
        var cfg = AdapterConfig.Load(adapter);
        Assert.AreEqual("MIXLORA", cfg.PeftType);
        Assert.AreEqual(4, cfg.NumExperts);
        Assert.AreEqual(2, cfg.TopK);
        Assert.AreEqual(8, cfg.R);
        Assert.IsTrue(AdapterWeights.Load(adapter).Keys.Any(k => k.Contains("moe_gate", StringComparison.Ordinal)));
        Assert.AreEqual("llama", ModelConfig.Load(Path.Combine(root, "model")).ModelType);
        Assert.IsTrue(File.Exists(Path.Combine(root, "model", TokenizerConfigFile.FileName)), "the model folder has tokenizer_config.json");
        foreach (var path in new[] { Path.Combine(root, "model"), Path.Combine(root, "artifacts"), adapter, Path.Combine(root, "run", "metrics.jsonl") })
            Assert.Contains(path, stdout, "the demo says where its outputs are");
        Assert.Contains("router load", stdout);
    }

    [TestMethod]
    public void SameSeedGivesTheSameModelAndData()
    {
        var (a, b) = (Path.Combine(TestFiles.TempDir(), "a"), Path.Combine(TestFiles.TempDir(), "b"));
        foreach (var dir in new[] { a, b })
        {
            var tasks = DemoCorpus.Generate(3);
            Directory.CreateDirectory(dir);
            foreach (var t in tasks) DemoCorpus.Write(t, dir);
            DemoModel.Write(dir, DemoModel.Config(300), 3);
        }
        foreach (var name in new[] { "arithmetic.jsonl", "copy.jsonl", "arc.jsonl", "model.safetensors", "config.json" })
            CollectionAssert.AreEqual(File.ReadAllBytes(Path.Combine(a, name)), File.ReadAllBytes(Path.Combine(b, name)), name);
        Assert.AreEqual((int)Math.Ceiling(300 / 64.0) * 64, ModelConfig.Load(a).VocabSize, "vocab rounded up to a multiple of 64");
    }

    [TestMethod]
    public void DemoTokenizerJsonLoadsMergesAndFallsBackToBytes()
    {
        var texts = DemoCorpus.Generate(1).SelectMany(t => t.Texts).Select(t => t.Prompt + t.Target).ToList();
        var (json, vocab) = DemoTokenizer.Build(texts, merges: 100);
        var file = Path.Combine(TestFiles.TempDir(), "tokenizer.json");
        File.WriteAllText(file, json.ToJsonString());
        var tok = HfTokenizer.Load(file);
        Assert.AreEqual(vocab, tok.VocabSize);
        // merges stay inside a run of letters or of punctuation, led by at most one ▁ (as SentencePiece pieces do)
        var piece = new Regex(@"^▁?(\p{L}+|[^\s\p{L}\p{N}▁]+)$");
        var merged = json["model"]!["merges"]!.AsArray().Select(m => (string)m![0]! + (string)m[1]!).ToList();
        Assert.IsGreaterThan(50, merged.Count);
        foreach (var token in merged) Assert.IsTrue(piece.IsMatch(token), $"merge '{token}'");
        Assert.AreEqual(1, tok.BosId);
        Assert.AreEqual(2, tok.EosId);
        foreach (var text in texts.Take(50))
        {
            var ids = tok.Encode(text);
            Assert.AreEqual(1, ids[0], "BOS from the post-processor");
            Assert.IsLessThan(text.Length + 1, ids.Count, $"merges shorten '{text}'");
            Assert.AreEqual(text, tok.Decode(ids, skipSpecialTokens: true));
        }
        // a character the corpus never had is encoded as its UTF-8 bytes (<0xC3> <0xA9> for é)
        var bytes = Encoding.UTF8.GetBytes("é").Select(b => tok.TokenToId($"<0x{b:X2}>")!.Value).ToArray();
        var e = tok.Encode("é", addSpecialTokens: false);
        CollectionAssert.AreEqual(bytes, e.Skip(e.Count - 2).ToArray());
        Assert.AreEqual("café!", tok.Decode(tok.Encode("café!"), skipSpecialTokens: true));
    }

    private static (int Code, string Out) CaptureOut(Func<int> run)
    {
        var (w, old) = (new StringWriter(), Console.Out);
        Console.SetOut(w);
        try
        {
            return (run(), w.ToString());
        }
        finally
        {
            Console.SetOut(old);
        }
    }
}
