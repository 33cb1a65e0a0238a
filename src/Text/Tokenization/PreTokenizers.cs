namespace MixLoRA.Text.Tokenization;

/// <summary>A tokenizer.json `pre_tokenizer`: splits pieces into words (and may rewrite them).</summary>
internal interface IPreTokenizer
{
    List<Piece> PreTokenize(List<Piece> pieces);
}

/// <summary>Builds pre-tokenizers from tokenizer.json; unknown types fail naming the type and the file.</summary>
internal static class PreTokenizers
{
    private const string Supported = "Sequence, Split, ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit";

    public static IPreTokenizer? From(JsonAt? node)
    {
        if (node is not { } n) return null;
        return n.TypeName switch
        {
            "Sequence" => new SequencePre(n.Get("pretokenizers").Items().Select(c => From(c)).OfType<IPreTokenizer>().ToArray()),
            "Split" => new SplitPre(Patterns.From(n.Get("pattern")), Behavior(n.Get("behavior")), n.OptBool("invert", false)),
            "ByteLevel" => new ByteLevelPre(n.OptBool("add_prefix_space", true), n.OptBool("use_regex", true)),
            "Metaspace" => Metaspace(n),
            "Digits" => new SplitPre(new CodePointRegex(@"\p{N}"),
                n.OptBool("individual_digits", false) ? SplitBehavior.Isolated : SplitBehavior.Contiguous, false),
            "Whitespace" => new SplitPre(new CodePointRegex(@"\w+|[^\w\s]+"), SplitBehavior.Removed, true),
            "WhitespaceSplit" => new SplitPre(new CodePointRegex(@"\s+"), SplitBehavior.Removed, false),
            _ => throw n.Unsupported("pre_tokenizer", Supported),
        };
    }

    private static SplitBehavior Behavior(JsonAt node) => node.Str() switch
    {
        "Removed" => SplitBehavior.Removed,
        "Isolated" => SplitBehavior.Isolated,
        "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
        "MergedWithNext" => SplitBehavior.MergedWithNext,
        "Contiguous" => SplitBehavior.Contiguous,
        var other => throw node.Bad($"unknown split behavior '{other}'"),
    };

    private static MetaspacePre Metaspace(JsonAt n)
    {
        string replacement = n.OptStr("replacement") ?? n.OptStr("str_rep") ?? "\u2581";
        var scheme = n.OptStr("prepend_scheme") switch
        {
            null => n.OptBool("add_prefix_space", true) ? PrependScheme.Always : PrependScheme.Never,
            "always" => PrependScheme.Always,
            "first" => PrependScheme.First,
            "never" => PrependScheme.Never,
            var other => throw n.Get("prepend_scheme").Bad($"unknown prepend_scheme '{other}'"),
        };
        return new MetaspacePre(replacement, scheme, n.OptBool("split", true));
    }

    private sealed record SequencePre(IPreTokenizer[] Steps) : IPreTokenizer
    {
        public List<Piece> PreTokenize(List<Piece> pieces)
        {
            foreach (var step in Steps) pieces = step.PreTokenize(pieces);
            return pieces;
        }
    }

    private sealed record SplitPre(CodePointRegex Pattern, SplitBehavior Behavior, bool Invert) : IPreTokenizer
    {
        public List<Piece> PreTokenize(List<Piece> pieces) =>
            Splitter.Apply(pieces, s => Splitter.Split(s, Pattern.Matches(s), Behavior, Invert));
    }

    private sealed class ByteLevelPre(bool addPrefixSpace, bool useRegex) : IPreTokenizer
    {
        private static readonly CodePointRegex Gpt2 = new(ByteLevel.Gpt2Pattern);

        public List<Piece> PreTokenize(List<Piece> pieces)
        {
            if (addPrefixSpace)
                pieces = pieces.Select(p => p.Text.StartsWith(' ') ? p : new Piece(" " + p.Text, p.AtStart)).ToList();
            if (useRegex)
                pieces = Splitter.Apply(pieces, s => Splitter.Split(s, Gpt2.Matches(s), SplitBehavior.Isolated));
            return pieces.Select(p => new Piece(ByteLevel.Encode(p.Text), p.AtStart)).ToList();
        }
    }
}

/// <summary>When Metaspace adds the replacement character in front of a piece.</summary>
internal enum PrependScheme { Always, First, Never }

/// <summary>SentencePiece-style Metaspace: spaces become ▁, a ▁ is prepended, and pieces split before each ▁.</summary>
internal sealed class MetaspacePre(string replacement, PrependScheme scheme, bool split) : IPreTokenizer
{
    private readonly CodePointRegex _marker = CodePointRegex.Literal(replacement);

    public string Replacement => replacement;

    public PrependScheme Scheme => scheme;

    public List<Piece> PreTokenize(List<Piece> pieces)
    {
        var rewritten = new List<Piece>(pieces.Count);
        foreach (var p in pieces)
        {
            string text = p.Text.Replace(" ", replacement, StringComparison.Ordinal);
            bool prepend = scheme == PrependScheme.Always || (scheme == PrependScheme.First && p.AtStart);
            if (prepend && !text.StartsWith(replacement, StringComparison.Ordinal)) text = replacement + text;
            rewritten.Add(new Piece(text, p.AtStart));
        }
        if (!split) return rewritten;
        return Splitter.Apply(rewritten, s => Splitter.Split(s, _marker.Matches(s), SplitBehavior.MergedWithNext));
    }
}
