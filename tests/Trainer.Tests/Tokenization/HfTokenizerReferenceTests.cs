using System.Text;
using MixLoRA.Text.Tokenization;

namespace MixLoRA.Trainer.Tests.Tokenization;

/// <summary>Every id and decode of the HF reference outputs for LLaMA-2, LLaMA-3 and Qwen3 tokenizers.</summary>
[TestClass]
public sealed class HfTokenizerReferenceTests
{
    [TestMethod]
    [DataRow("llama2")]
    [DataRow("llama3")]
    [DataRow("qwen3")]
    public void EncodeMatchesHfIds(string name)
    {
        var tok = RealTokenizers.Get(name);
        var failures = new StringBuilder();
        var rows = RealTokenizers.Expected(name);
        Assert.IsGreaterThan(50, rows.Count);
        foreach (var (text, ids, _) in rows)
        {
            var got = tok.Encode(text);
            if (!got.SequenceEqual(ids))
                failures.AppendLine($"{Show(text)}: expected [{string.Join(", ", ids)}] got [{string.Join(", ", got)}]");
        }
        Assert.AreEqual("", failures.ToString());
    }

    [TestMethod]
    [DataRow("llama2")]
    [DataRow("llama3")]
    [DataRow("qwen3")]
    public void DecodeMatchesHf(string name)
    {
        var tok = RealTokenizers.Get(name);
        var failures = new StringBuilder();
        foreach (var (text, ids, decoded) in RealTokenizers.Expected(name))
        {
            string got = tok.Decode(ids, skipSpecialTokens: true);
            if (got != decoded) failures.AppendLine($"{Show(text)}: expected {Show(decoded)} got {Show(got)}");
        }
        Assert.AreEqual("", failures.ToString());
    }

    /// <summary>Without special tokens, the ids are the reference ids less the post-processor's prefix and suffix.</summary>
    [TestMethod]
    [DataRow("llama2")]
    [DataRow("llama3")]
    [DataRow("qwen3")]
    public void EncodeWithoutSpecialTokensDropsOnlyTheTemplateTokens(string name)
    {
        var tok = RealTokenizers.Get(name);
        var rows = RealTokenizers.Expected(name);
        var empty = rows.Single(r => r.Text.Length == 0).Ids; // what the template alone adds
        foreach (var (text, ids, _) in rows)
        {
            var expected = ids.Skip(empty.Length).ToArray();
            CollectionAssert.AreEqual(expected, tok.Encode(text, addSpecialTokens: false).ToArray(), Show(text));
        }
    }

    [TestMethod]
    [DataRow("llama2")]
    [DataRow("llama3")]
    [DataRow("qwen3")]
    public void SpecialIdsFollowTokenizerConfig(string name)
    {
        var tok = RealTokenizers.Get(name);
        int? Id(string key) => RealTokenizers.ConfigToken(name, key) is { } t ? tok.TokenToId(t) : null;
        Assert.AreEqual(Id("bos_token"), tok.BosId);
        Assert.AreEqual(Id("eos_token"), tok.EosId);
        Assert.AreEqual(Id("pad_token"), tok.PadId);
        if (RealTokenizers.ConfigToken(name, "eos_token") is not null) Assert.IsNotNull(tok.EosId);
    }

    [TestMethod]
    public void Llama2BosIsWhatTheTemplateAddsToEmptyText()
    {
        var empty = RealTokenizers.Expected("llama2").Single(r => r.Text.Length == 0).Ids;
        Assert.AreEqual(1, empty.Length);
        Assert.AreEqual(empty[0], RealTokenizers.Get("llama2").BosId);
    }

    [TestMethod]
    [DataRow("llama2")]
    [DataRow("llama3")]
    [DataRow("qwen3")]
    public void VocabSizeCoversEveryIdAndToken(string name)
    {
        var tok = RealTokenizers.Get(name);
        Assert.IsGreaterThan(tok.AddedTokens.Max(t => t.Id), tok.VocabSize);
        Assert.IsGreaterThan(RealTokenizers.Expected(name).SelectMany(r => r.Ids).Max(), tok.VocabSize);
        Assert.IsNotNull(tok.IdToToken(tok.VocabSize - 1));
        Assert.IsNull(tok.IdToToken(tok.VocabSize));
    }

    /// <summary>Byte-level BPE is lossless: a long mixed text (incl. emoji next to letters) decodes to itself.</summary>
    [TestMethod]
    [DataRow("llama3")]
    [DataRow("qwen3")]
    public void ByteLevelRoundTripsLongText(string name)
    {
        var tok = RealTokenizers.Get(name);
        var text = string.Concat(RealTokenizers.Expected(name).Select(r => r.Text + "\n")) + "😀abc 𠀀𠀁x 𝟘𝟙 \u00e1";
        var ids = tok.Encode(text, addSpecialTokens: false);
        Assert.AreEqual(text, tok.Decode(ids));
    }

    /// <summary>Qwen3's NFC normalizer composes a + U+0301 into U+00E1; LLaMA-3 has no normalizer and keeps them apart.</summary>
    [TestMethod]
    public void NfcNormalizerComposesCharacters()
    {
        var qwen = RealTokenizers.Get("qwen3");
        var llama = RealTokenizers.Get("llama3");
        CollectionAssert.AreEqual(qwen.Encode("caf\u00e9").ToArray(), qwen.Encode("cafe\u0301").ToArray());
        CollectionAssert.AreNotEqual(llama.Encode("caf\u00e9").ToArray(), llama.Encode("cafe\u0301").ToArray());
        Assert.AreEqual("cafe\u0301", llama.Decode(llama.Encode("cafe\u0301")));
    }

    private static string Show(string s) => System.Text.Json.JsonSerializer.Serialize(s);
}
