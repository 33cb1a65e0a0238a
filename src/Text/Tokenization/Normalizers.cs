namespace MixLoRA.Text.Tokenization;

/// <summary>A tokenizer.json `normalizer`: rewrites a piece of text before pre-tokenization.</summary>
internal interface INormalizer
{
    string Normalize(string text);
}

/// <summary>Builds normalizers from tokenizer.json; unknown types fail naming the type and the file.</summary>
internal static class Normalizers
{
    private const string Supported = "Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip";

    public static INormalizer? From(JsonAt? node)
    {
        if (node is not { } n) return null;
        return n.TypeName switch
        {
            "Sequence" => new SequenceNormalizer(n.Get("normalizers").Items().Select(c => From(c)).OfType<INormalizer>().ToArray()),
            "Prepend" => new PrependNormalizer(n.Get("prepend").Str()),
            "Replace" => new ReplaceNormalizer(Patterns.From(n.Get("pattern")), n.Get("content").Str()),
            "NFC" => new UnicodeNormalizer(UnicodeForm.Nfc),
            "NFD" => new UnicodeNormalizer(UnicodeForm.Nfd),
            "NFKC" => new UnicodeNormalizer(UnicodeForm.Nfkc),
            "NFKD" => new UnicodeNormalizer(UnicodeForm.Nfkd),
            "Lowercase" => new LowercaseNormalizer(),
            "Strip" => new StripNormalizer(n.OptBool("strip_left", true), n.OptBool("strip_right", true)),
            _ => throw n.Unsupported("normalizer", Supported),
        };
    }

    private sealed record SequenceNormalizer(INormalizer[] Steps) : INormalizer
    {
        public string Normalize(string text)
        {
            foreach (var step in Steps) text = step.Normalize(text);
            return text;
        }
    }

    /// <summary>HF prepends only to non-empty text.</summary>
    private sealed record PrependNormalizer(string Prefix) : INormalizer
    {
        public string Normalize(string text) => text.Length == 0 ? text : Prefix + text;
    }

    private sealed record ReplaceNormalizer(CodePointRegex Pattern, string Content) : INormalizer
    {
        public string Normalize(string text) => Pattern.Replace(text, Content);
    }

    private sealed record UnicodeNormalizer(UnicodeForm Form) : INormalizer
    {
        public string Normalize(string text) => UnicodeNormalization.Normalize(text, Form);
    }

    private sealed record LowercaseNormalizer : INormalizer
    {
        public string Normalize(string text) => text.ToLowerInvariant();
    }

    private sealed record StripNormalizer(bool Left, bool Right) : INormalizer
    {
        public string Normalize(string text) => (Left, Right) switch
        {
            (true, true) => text.Trim(),
            (true, false) => text.TrimStart(),
            (false, true) => text.TrimEnd(),
            _ => text,
        };
    }
}

/// <summary>tokenizer.json patterns: {"String": literal} or {"Regex": pattern}.</summary>
internal static class Patterns
{
    public static CodePointRegex From(JsonAt node)
    {
        if (node.Opt("String") is { } s) return CodePointRegex.Literal(s.Str());
        if (node.Opt("Regex") is { } r)
        {
            try
            {
                return new CodePointRegex(r.Str());
            }
            catch (ArgumentException e)
            {
                throw r.Bad($"regex '{r.Str()}' is not supported by .NET ({e.Message})");
            }
        }
        throw node.Bad("expected a pattern {\"String\": ...} or {\"Regex\": ...}");
    }
}
