using System.Text.Json.Nodes;
using MixLoRA.Cli.Demo;
using MixLoRA.Text.Tokenization;
using MixLoRA.Trainer.Tests.Data;

namespace MixLoRA.Trainer.Tests.Tokenization;

/// <summary>tokenizer_config.json derived from a tokenizer.json alone, against the files the real tokenizers ship with.</summary>
[TestClass]
public sealed class TokenizerConfigFileTests
{
    /// <summary>
    /// The derived config names the shipped config's tokenizer family, BOS/UNK tokens and BOS flag (and EOS where
    /// the tokenizer.json alone can know it: Qwen3's chat EOS is only in its config), and with it written beside
    /// the tokenizer.json our tokenizer gives the same special ids and every reference id.
    /// </summary>
    [TestMethod]
    [DataRow("llama2", "llama", true)]
    [DataRow("llama3", "llama", true)]
    [DataRow("qwen3", "qwen2", false)]
    public void DerivedConfigAgreesWithTheShippedOneAndKeepsTheIds(string name, string modelType, bool eosKnowable)
    {
        var dir = TestFiles.TempDir();
        var file = Path.Combine(dir, "tokenizer.json");
        File.Copy(RealTokenizers.File(name), file);
        var model = DemoModel.Config(64) with { ModelType = modelType, BosTokenId = null, EosTokenIds = [], PadTokenId = null, MaxPositionEmbeddings = 4096 };
        var derived = TokenizerConfigFile.Derive(file, model);

        static string Family(string? c) => c is { } s && s.EndsWith("Fast", StringComparison.Ordinal) ? s[..^4] : c ?? "";
        Assert.AreEqual(Family(RealTokenizers.ConfigToken(name, "tokenizer_class")), Family((string?)derived["tokenizer_class"]));
        Assert.AreEqual(RealTokenizers.ConfigToken(name, "bos_token"), (string?)derived["bos_token"]);
        Assert.AreEqual(RealTokenizers.ConfigToken(name, "unk_token"), (string?)derived["unk_token"]);
        if (eosKnowable) Assert.AreEqual(RealTokenizers.ConfigToken(name, "eos_token"), (string?)derived["eos_token"]);
        var shippedAddBos = JsonNode.Parse(File.ReadAllText(Path.Combine(RealTokenizers.Folder(name), TokenizerConfigFile.FileName)))!["add_bos_token"];
        Assert.AreEqual(shippedAddBos is null ? RealTokenizers.Get(name).SpecialPrefix.Count > 0 : (bool)shippedAddBos, (bool)derived["add_bos_token"]!);
        Assert.IsFalse((bool)derived["add_eos_token"]!);
        Assert.AreEqual(4096, (int)derived["model_max_length"]!);

        var without = HfTokenizer.Load(file);
        TokenizerConfigFile.Write(Path.Combine(dir, TokenizerConfigFile.FileName), file, model);
        var with = HfTokenizer.Load(file);
        Assert.AreEqual((without.BosId, without.EosId, without.PadId), (with.BosId, with.EosId, with.PadId));
        foreach (var (text, ids, _) in RealTokenizers.Expected(name))
            CollectionAssert.AreEqual(ids, with.Encode(text).ToArray(), text);
    }

    [TestMethod]
    public void AConfigBesideTheTokenizerIsNotReadWhenDeriving()
    {
        var dir = TestFiles.TempDir();
        var texts = DemoCorpus.Generate(1).SelectMany(t => t.Texts).Select(t => t.Prompt + t.Target);
        var cfg = DemoModel.Config(300);
        DemoModel.WriteTokenizer(dir, DemoTokenizer.Build(texts, merges: 50).Json, cfg);
        var configFile = Path.Combine(dir, TokenizerConfigFile.FileName);
        var written = File.ReadAllText(configFile);
        File.WriteAllText(configFile, """{"bos_token": "</s>", "eos_token": null, "tokenizer_class": "Other"}""");
        var again = Path.Combine(dir, "again.json");
        TokenizerConfigFile.Write(again, Path.Combine(dir, "tokenizer.json"), cfg);
        Assert.AreEqual(written, File.ReadAllText(again));
        StringAssert.Contains(written, "\"bos_token\": \"<s>\"");
    }
}
