using System.Text;

namespace MixLoRA.Text.Tokenization;

/// <summary>A tokenizer.json `decoder` step: maps token strings to strings (HF `decode_chain`).</summary>
internal interface IDecoder
{
    List<string> DecodeChain(List<string> tokens);
}

/// <summary>Builds decoders from tokenizer.json; unknown types fail naming the type and the file.</summary>
internal static class Decoders
{
    private const string Supported = "Sequence, Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace";

    public static IDecoder? From(JsonAt? node)
    {
        if (node is not { } n) return null;
        return n.TypeName switch
        {
            "Sequence" => new SequenceDecoder(n.Get("decoders").Items().Select(c => From(c)).OfType<IDecoder>().ToArray()),
            "Replace" => new ReplaceDecoder(Patterns.From(n.Get("pattern")), n.Get("content").Str()),
            "ByteFallback" => new ByteFallbackDecoder(),
            "Fuse" => new FuseDecoder(),
            "Strip" => new StripDecoder(Single(n.Get("content")), n.Get("start").Int(), n.Get("stop").Int()),
            "ByteLevel" => new ByteLevelDecoder(),
            "Metaspace" => MetaspaceFrom(n),
            _ => throw n.Unsupported("decoder", Supported),
        };
    }

    private static char Single(JsonAt node)
    {
        string s = node.Str();
        return s.Length == 1 ? s[0] : throw node.Bad($"expected one character, found '{s}'");
    }

    private static MetaspaceDecoder MetaspaceFrom(JsonAt n)
    {
        string replacement = n.OptStr("replacement") ?? "\u2581";
        string? scheme = n.OptStr("prepend_scheme");
        bool strips = scheme is null ? n.OptBool("add_prefix_space", true) : scheme != "never";
        return new MetaspaceDecoder(replacement, strips);
    }

    private sealed record SequenceDecoder(IDecoder[] Steps) : IDecoder
    {
        public List<string> DecodeChain(List<string> tokens)
        {
            foreach (var step in Steps) tokens = step.DecodeChain(tokens);
            return tokens;
        }
    }

    private sealed record ReplaceDecoder(CodePointRegex Pattern, string Content) : IDecoder
    {
        public List<string> DecodeChain(List<string> tokens) => tokens.Select(t => Pattern.Replace(t, Content)).ToList();
    }

    private sealed record FuseDecoder : IDecoder
    {
        public List<string> DecodeChain(List<string> tokens) => [string.Concat(tokens)];
    }

    private sealed record ByteLevelDecoder : IDecoder
    {
        public List<string> DecodeChain(List<string> tokens) => [ByteLevel.Decode(tokens)];
    }

    /// <summary>Removes up to Start leading and Stop trailing Content characters of each token.</summary>
    private sealed record StripDecoder(char Content, int Start, int Stop) : IDecoder
    {
        public List<string> DecodeChain(List<string> tokens) => tokens.Select(StripOne).ToList();

        private string StripOne(string token)
        {
            int a = 0, b = token.Length;
            while (a < Start && a < token.Length && token[a] == Content) a++;
            for (int i = 0; i < Stop && b > a && token[b - 1] == Content; i++) b--;
            return token[a..b];
        }
    }

    /// <summary>Runs of &lt;0xNN&gt; tokens become their UTF-8 text, or one U+FFFD per byte when invalid.</summary>
    private sealed record ByteFallbackDecoder : IDecoder
    {
        private static readonly UTF8Encoding Strict = new(false, true);

        public List<string> DecodeChain(List<string> tokens)
        {
            var result = new List<string>(tokens.Count);
            var bytes = new List<byte>();
            foreach (var token in tokens)
            {
                if (token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
                    && byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out byte b))
                {
                    bytes.Add(b);
                    continue;
                }
                Flush(bytes, result);
                result.Add(token);
            }
            Flush(bytes, result);
            return result;
        }

        private static void Flush(List<byte> bytes, List<string> result)
        {
            if (bytes.Count == 0) return;
            try
            {
                result.Add(Strict.GetString(bytes.ToArray()));
            }
            catch (DecoderFallbackException)
            {
                for (int i = 0; i < bytes.Count; i++) result.Add("\uFFFD");
            }
            bytes.Clear();
        }
    }

    /// <summary>▁ becomes a space, except in the first token when a prefix ▁ was added at encoding.</summary>
    private sealed record MetaspaceDecoder(string Replacement, bool StripsFirst) : IDecoder
    {
        public List<string> DecodeChain(List<string> tokens) =>
            tokens.Select((t, i) => t.Replace(Replacement, i == 0 && StripsFirst ? "" : " ", StringComparison.Ordinal)).ToList();
    }
}
