using System.Text.Json.Nodes;
using MixLoRA.GraphBuilder;
using MixLoRA.Text.Tokenization;

namespace MixLoRA.Trainer.Tests.Tokenization;

/// <summary>BPE, added-token and error behavior on small hand-made tokenizer.json files (ids derived by hand from HF's algorithm).</summary>
[TestClass]
public sealed class HfTokenizerUnitTests
{
    private static readonly string[] Abc = ["a", "b", "c", "ab", "abc", "bc", " "];

    [TestMethod]
    public void MergesAsStringsOrArraysAgree()
    {
        using var t = new TinyTokenizer();
        var fromStrings = t.Load(TinyTokenizer.Bpe(Abc, ["a b", "ab c", "b c"])).Encode("abcab");
        var fromArrays = t.Load(TinyTokenizer.Bpe(Abc, [new JsonArray("a", "b"), new JsonArray("ab", "c"), new JsonArray("b", "c")])).Encode("abcab");
        // a b c a b -> (rank 0: a+b, leftmost first) ab c ab -> (rank 1: ab+c) abc ab
        CollectionAssert.AreEqual(new[] { 4, 3 }, fromStrings.ToArray());
        CollectionAssert.AreEqual(fromStrings.ToArray(), fromArrays.ToArray());
    }

    [TestMethod]
    public void LowerRankWinsOverPosition()
    {
        using var t = new TinyTokenizer();
        // "b c" has rank 0 here, so a b c -> a bc; "ab" never forms
        var ids = t.Load(TinyTokenizer.Bpe(Abc, ["b c", "a b", "ab c"])).Encode("abc");
        CollectionAssert.AreEqual(new[] { 0, 5 }, ids.ToArray());
    }

    [TestMethod]
    public void SingleWordAddedTokenOnlyMatchesWholeWords()
    {
        using var t = new TinyTokenizer();
        var tok = t.Load(TinyTokenizer.Bpe(Abc, ["a b"]), [TinyTokenizer.Added(10, "ab", singleWord: true)]);
        // first "ab" stands alone -> added token; second follows "c" -> plain BPE (" ", "c", "ab")
        CollectionAssert.AreEqual(new[] { 10, 6, 2, 3 }, tok.Encode("ab cab").ToArray());
    }

    [TestMethod]
    public void LstripAndRstripSwallowSurroundingSpaces()
    {
        using var t = new TinyTokenizer();
        var tok = t.Load(TinyTokenizer.Bpe(Abc, []), [TinyTokenizer.Added(10, "<m>", lstrip: true, rstrip: true)]);
        CollectionAssert.AreEqual(new[] { 0, 10, 1 }, tok.Encode("a  <m> b").ToArray());
        var plain = t.Load(TinyTokenizer.Bpe(Abc, []), [TinyTokenizer.Added(10, "<m>")]);
        CollectionAssert.AreEqual(new[] { 0, 6, 6, 10, 6, 1 }, plain.Encode("a  <m> b").ToArray());
    }

    [TestMethod]
    public void ByteFallbackEncodesUtf8BytesAndDecodesThemBack()
    {
        using var t = new TinyTokenizer();
        string[] vocab = ["<unk>", "a", "<0xC3>", "<0xA9>"];
        var decoder = new JsonObject { ["type"] = "Sequence", ["decoders"] = new JsonArray(new JsonObject { ["type"] = "ByteFallback" }, new JsonObject { ["type"] = "Fuse" }) };
        var tok = t.Load(TinyTokenizer.Bpe(vocab, [], byteFallback: true, unk: "<unk>"), decoder: decoder);
        var ids = tok.Encode("a\u00e9");
        CollectionAssert.AreEqual(new[] { 1, 2, 3 }, ids.ToArray());
        Assert.AreEqual("a\u00e9", tok.Decode(ids));
        Assert.AreEqual("\uFFFDa", tok.Decode([2, 1]), "a lone lead byte is invalid UTF-8");
    }

    [TestMethod]
    public void UnknownCharactersFuseIntoOneUnk()
    {
        using var t = new TinyTokenizer();
        string[] vocab = ["<unk>", "a"];
        CollectionAssert.AreEqual(new[] { 1, 0, 1 }, t.Load(TinyTokenizer.Bpe(vocab, [], unk: "<unk>", fuseUnk: true)).Encode("axya").ToArray());
        CollectionAssert.AreEqual(new[] { 1, 0, 0, 1 }, t.Load(TinyTokenizer.Bpe(vocab, [], unk: "<unk>")).Encode("axya").ToArray());
    }

    [TestMethod]
    public void MissingFileIsAUserErrorNamingIt()
    {
        var e = Assert.ThrowsExactly<UserError>(() => HfTokenizer.Load("/nonexistent/dir/tokenizer.json"));
        StringAssert.Contains(e.Message, "/nonexistent/dir/tokenizer.json");
    }

    [TestMethod]
    public void FolderWithoutTokenizerJsonIsAUserError()
    {
        using var t = new TinyTokenizer();
        var e = Assert.ThrowsExactly<UserError>(() => HfTokenizer.FromDirectory(t.Dir));
        StringAssert.Contains(e.Message, t.Dir);
        StringAssert.Contains(e.Message, "tokenizer.json");
    }

    [TestMethod]
    public void FromDirectoryLoadsTheFolder()
    {
        using var t = new TinyTokenizer();
        t.Write(TinyTokenizer.Bpe(Abc, ["a b"]));
        CollectionAssert.AreEqual(new[] { 3 }, HfTokenizer.FromDirectory(t.Dir).Encode("ab").ToArray());
    }

    [TestMethod]
    public void MalformedJsonNamesTheFile()
    {
        using var t = new TinyTokenizer();
        File.WriteAllText(t.File, "{\"model\": {\"type\": \"BPE\",, }");
        var e = Assert.ThrowsExactly<UserError>(() => HfTokenizer.Load(t.File));
        StringAssert.Contains(e.Message, t.File);
        StringAssert.Contains(e.Message, "malformed JSON");
    }

    [TestMethod]
    public void UnsupportedModelTypeIsNamed()
    {
        using var t = new TinyTokenizer();
        var model = TinyTokenizer.Bpe(Abc, []);
        model["type"] = "WordPiece";
        t.Write(model);
        var e = Assert.ThrowsExactly<UserError>(() => HfTokenizer.Load(t.File));
        StringAssert.Contains(e.Message, "WordPiece");
        StringAssert.Contains(e.Message, t.File);
    }

    [TestMethod]
    [DataRow("normalizer", "BertNormalizer")]
    [DataRow("pre_tokenizer", "UnicodeScripts")]
    [DataRow("post_processor", "Mystery")]
    [DataRow("decoder", "WordPiece")]
    public void UnsupportedComponentIsNamed(string key, string type)
    {
        using var t = new TinyTokenizer();
        var component = new JsonObject { ["type"] = type };
        t.Write(TinyTokenizer.Bpe(Abc, []),
            normalizer: key == "normalizer" ? component : null, preTokenizer: key == "pre_tokenizer" ? component : null,
            postProcessor: key == "post_processor" ? component : null, decoder: key == "decoder" ? component : null);
        var e = Assert.ThrowsExactly<UserError>(() => HfTokenizer.Load(t.File));
        StringAssert.Contains(e.Message, $"'{type}'");
        StringAssert.Contains(e.Message, key);
        StringAssert.Contains(e.Message, t.File);
    }

    [TestMethod]
    public void MergeOfUnknownTokenNamesTheKey()
    {
        using var t = new TinyTokenizer();
        t.Write(TinyTokenizer.Bpe(Abc, ["a z"]));
        var e = Assert.ThrowsExactly<UserError>(() => HfTokenizer.Load(t.File));
        StringAssert.Contains(e.Message, "model.merges[0]");
        StringAssert.Contains(e.Message, "'z'");
    }

    [TestMethod]
    public void ConfigDecidesSpecialIds()
    {
        using var t = new TinyTokenizer();
        JsonArray added = [TinyTokenizer.Added(7, "<s>"), TinyTokenizer.Added(8, "</s>"), TinyTokenizer.Added(9, "<pad>")];
        t.Write(TinyTokenizer.Bpe(Abc, []), added);
        var noConfig = HfTokenizer.Load(t.File);
        Assert.AreEqual((int?)7, noConfig.BosId);
        Assert.AreEqual((int?)8, noConfig.EosId);
        Assert.AreEqual((int?)9, noConfig.PadId);
        File.WriteAllText(Path.Combine(t.Dir, "tokenizer_config.json"),
            "{\"bos_token\": null, \"eos_token\": {\"content\": \"<pad>\"}, \"pad_token\": \"</s>\"}");
        var withConfig = HfTokenizer.Load(t.File);
        Assert.IsNull(withConfig.BosId);
        Assert.AreEqual((int?)9, withConfig.EosId);
        Assert.AreEqual((int?)8, withConfig.PadId);
    }
}

/// <summary>The older SentencePiece layout: Metaspace pre-tokenizer and decoder instead of Prepend/Replace normalizers.</summary>
[TestClass]
public sealed class MetaspaceTests
{
    [TestMethod]
    [DataRow("first", new[] { 0, 1, 5, 3 })]
    [DataRow("always", new[] { 0, 1, 5, 1 })]
    public void PrependSchemeDecidesWhichPiecesGetTheMarker(string scheme, int[] expected)
    {
        using var t = new TinyTokenizer();
        string[] vocab = ["\u2581a", "\u2581b", "a", "b", "\u2581"];
        var pre = new JsonObject { ["type"] = "Metaspace", ["replacement"] = "\u2581", ["prepend_scheme"] = scheme, ["split"] = true };
        var dec = new JsonObject { ["type"] = "Metaspace", ["replacement"] = "\u2581", ["prepend_scheme"] = scheme, ["split"] = true };
        var tok = t.Load(TinyTokenizer.Bpe(vocab, ["\u2581 a", "\u2581 b"]), [TinyTokenizer.Added(5, "<m>")], preTokenizer: pre, decoder: dec);
        // "a b<m>b": piece "a b" -> ▁a ▁b; after <m>, "b" is not at the start of the text, so "first" adds no ▁
        var ids = tok.Encode("a b<m>b");
        CollectionAssert.AreEqual(expected, ids.ToArray());
        Assert.AreEqual(scheme == "first" ? "a b<m>b" : "a b<m> b", tok.Decode(ids));
    }
}
