using System.Text.Json.Nodes;

namespace MixLoRA.Cli.Demo;

/// <summary>
/// A small LLaMA-2-style tokenizer.json for the demo, learned from its corpus: SentencePiece-like BPE
/// (spaces become `▁`, a `▁` is prepended, byte fallback for anything unseen), `<unk>`/`<s>`/`</s>`
/// special tokens, BOS added by the post-processor, and the matching decoder. The merges are learned
/// greedily (most frequent adjacent pair; ties by ordinal order) and only within a run of letters or of
/// punctuation, optionally led by one `▁` (see <see cref="Mergeable"/>), so tokens look like
/// SentencePiece pieces (`▁the`, `.`) and other SentencePiece-style tokenizers split text the same way.
/// </summary>
public static class DemoTokenizer
{
    public const string Space = "▁";
    private static readonly string[] Specials = ["<unk>", "<s>", "</s>"];

    /// <summary>The tokenizer.json content and its vocabulary size.</summary>
    public static (JsonObject Json, int VocabSize) Build(IEnumerable<string> corpus, int merges)
    {
        var sequences = corpus.Select(t => (Space + t.Replace(" ", Space, StringComparison.Ordinal)).Select(c => c.ToString()).ToList()).ToList();
        var vocab = new List<string>(Specials);
        vocab.AddRange(Enumerable.Range(0, 256).Select(b => $"<0x{b:X2}>"));
        vocab.AddRange(sequences.SelectMany(s => s).Distinct().Order(StringComparer.Ordinal));
        var learned = new List<(string, string)>();
        for (var i = 0; i < merges; i++)
        {
            if (BestPair(sequences) is not { } pair) break;
            learned.Add(pair);
            vocab.Add(pair.Left + pair.Right);
            foreach (var s in sequences) Merge(s, pair.Left, pair.Right);
        }
        return (Json(vocab, learned), vocab.Count);
    }

    /// <summary>
    /// Whether left+right may become a token: an optional leading `▁` and then only letters, or only
    /// punctuation/symbols; never digits, whitespace or a `▁` inside. SentencePiece's own splitting (by
    /// whitespace, script and digit) keeps LLaMA-2's pieces within such runs, and tokenizers that
    /// pre-split SentencePiece text with the LLaMA regex (onnxruntime-extensions, used by ONNX Runtime
    /// GenAI) rely on that: a merge across a letter/punctuation boundary (`s.`) would be applied by HF
    /// tokenizers but not by them.
    /// </summary>
    internal static bool Mergeable(string left, string right)
    {
        var s = (left + right).AsSpan();
        if (s.StartsWith(Space, StringComparison.Ordinal)) s = s[Space.Length..];
        if (s.IsEmpty) return false;
        var letters = char.IsLetter(s[0]);
        foreach (var c in s)
        {
            if (char.IsWhiteSpace(c) || char.IsNumber(c) || c == Space[0] || char.IsSurrogate(c)) return false;
            if (char.IsLetter(c) != letters) return false;
        }
        return true;
    }

    private static (string Left, string Right)? BestPair(List<List<string>> sequences)
    {
        var counts = new Dictionary<(string, string), int>();
        foreach (var s in sequences)
        {
            for (var i = 0; i + 1 < s.Count; i++)
            {
                if (!Mergeable(s[i], s[i + 1])) continue;
                counts[(s[i], s[i + 1])] = counts.GetValueOrDefault((s[i], s[i + 1])) + 1;
            }
        }
        if (counts.Count == 0) return null;
        var best = counts.OrderByDescending(p => p.Value)
            .ThenBy(p => p.Key.Item1, StringComparer.Ordinal).ThenBy(p => p.Key.Item2, StringComparer.Ordinal).First();
        return best.Value < 2 ? null : best.Key;
    }

    private static void Merge(List<string> s, string left, string right)
    {
        for (var i = 0; i + 1 < s.Count; i++)
        {
            if (s[i] != left || s[i + 1] != right) continue;
            s[i] = left + right;
            s.RemoveAt(i + 1);
        }
    }

    private static JsonObject Json(List<string> vocab, List<(string Left, string Right)> merges)
    {
        var v = new JsonObject();
        for (var i = 0; i < vocab.Count; i++) v[vocab[i]] = i;
        var added = new JsonArray(Specials.Select((s, i) => (JsonNode)new JsonObject
        {
            ["id"] = i, ["content"] = s, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
        }).ToArray());
        return new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["normalizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Prepend", ["prepend"] = Space },
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = Space }),
            },
            ["pre_tokenizer"] = null,
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<s>", ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }),
                ["pair"] = new JsonArray(
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<s>", ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } },
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<s>", ["type_id"] = 1 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "B", ["type_id"] = 1 } }),
                ["special_tokens"] = new JsonObject
                {
                    ["<s>"] = new JsonObject { ["id"] = "<s>", ["ids"] = new JsonArray(1), ["tokens"] = new JsonArray("<s>") },
                },
            },
            ["decoder"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["decoders"] = new JsonArray(
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = Space }, ["content"] = " " },
                    new JsonObject { ["type"] = "ByteFallback" },
                    new JsonObject { ["type"] = "Fuse" },
                    new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 }),
            },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = "<unk>", ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = true, ["byte_fallback"] = true, ["ignore_merges"] = false,
                ["vocab"] = v,
                ["merges"] = new JsonArray(merges.Select(m => (JsonNode)new JsonArray(m.Left, m.Right)).ToArray()),
            },
        };
    }
}
