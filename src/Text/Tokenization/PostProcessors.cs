namespace MixLoRA.Text.Tokenization;

/// <summary>A tokenizer.json `post_processor` for one sequence: adds special tokens around the ids.</summary>
internal interface IPostProcessor
{
    /// <summary>Special ids placed before the sequence.</summary>
    IReadOnlyList<int> Prefix { get; }

    /// <summary>Special ids placed after the sequence.</summary>
    IReadOnlyList<int> Suffix { get; }
}

/// <summary>Builds post-processors from tokenizer.json; unknown types fail naming the type and the file.</summary>
internal static class PostProcessors
{
    private const string Supported = "TemplateProcessing, ByteLevel, Sequence, BertProcessing, RobertaProcessing";

    public static IPostProcessor? From(JsonAt? node)
    {
        if (node is not { } n) return null;
        return n.TypeName switch
        {
            "TemplateProcessing" => Template(n),
            "ByteLevel" => new Fixed([], []),
            "Sequence" => Concat(n.Get("processors").Items().Select(c => From(c)).OfType<IPostProcessor>()),
            "BertProcessing" => new Fixed([Pair(n.Get("cls"))], [Pair(n.Get("sep"))]),
            "RobertaProcessing" => new Fixed([Pair(n.Get("cls"))], [Pair(n.Get("sep"))]),
            _ => throw n.Unsupported("post_processor", Supported),
        };
    }

    private sealed record Fixed(IReadOnlyList<int> Prefix, IReadOnlyList<int> Suffix) : IPostProcessor;

    private static int Pair(JsonAt node)
    {
        var parts = node.Items().ToArray();
        return parts.Length == 2 ? parts[1].Int() : throw node.Bad("expected [token, id]");
    }

    private static Fixed Concat(IEnumerable<IPostProcessor> steps)
    {
        var prefix = new List<int>();
        var suffix = new List<int>();
        foreach (var s in steps)
        {
            prefix.InsertRange(0, s.Prefix);
            suffix.AddRange(s.Suffix);
        }
        return new Fixed(prefix, suffix);
    }

    /// <summary>The `single` template: special tokens before and after the one sequence "A".</summary>
    private static Fixed Template(JsonAt n)
    {
        var specials = new Dictionary<string, int[]>(StringComparer.Ordinal);
        foreach (var (name, value) in n.Get("special_tokens").Members())
            specials[name] = value.Get("ids").Items().Select(i => i.Int()).ToArray();
        var prefix = new List<int>();
        var suffix = new List<int>();
        bool seenSequence = false;
        foreach (var item in n.Get("single").Items())
        {
            if (item.Opt("Sequence") is not null) { seenSequence = true; continue; }
            var special = item.Get("SpecialToken");
            string id = special.Get("id").Str();
            if (!specials.TryGetValue(id, out var ids))
                throw special.Bad($"special token '{id}' is not listed in post_processor.special_tokens");
            (seenSequence ? suffix : prefix).AddRange(ids);
        }
        return new Fixed(prefix, suffix);
    }
}
