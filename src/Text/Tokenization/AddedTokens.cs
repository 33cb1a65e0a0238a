namespace MixLoRA.Text.Tokenization;

/// <summary>An entry of tokenizer.json `added_tokens`.</summary>
public sealed record AddedToken(int Id, string Content, bool SingleWord, bool LStrip, bool RStrip, bool Normalized, bool Special);

/// <summary>A span of text: either an added token (<see cref="Id"/> set) or text for the model.</summary>
internal readonly record struct TextSplit(int Start, int End, int? Id);

/// <summary>
/// The added vocabulary of HF tokenizers: added tokens are cut out of the text before the model sees it,
/// leftmost-longest, honouring single_word / lstrip / rstrip. Tokens with normalized=false match the raw
/// text; tokens with normalized=true match the normalized text (their content normalized the same way).
/// </summary>
internal sealed class AddedTokens
{
    private readonly Dictionary<int, AddedToken> _byId = [];
    private readonly Trie _raw = new();
    private readonly Trie _normalized = new();

    public AddedTokens(IEnumerable<AddedToken> tokens, INormalizer? normalizer)
    {
        foreach (var t in tokens)
        {
            _byId[t.Id] = t;
            if (t.Content.Length == 0) continue;
            if (t.Normalized) _normalized.Add(normalizer?.Normalize(t.Content) ?? t.Content, t);
            else _raw.Add(t.Content, t);
        }
    }

    public IReadOnlyCollection<AddedToken> All => _byId.Values;

    public AddedToken? ById(int id) => _byId.GetValueOrDefault(id);

    public bool IsSpecial(int id) => _byId.TryGetValue(id, out var t) && t.Special;

    public List<TextSplit> SplitRaw(string text) => Split(text, _raw);

    public List<TextSplit> SplitNormalized(string text) => Split(text, _normalized);

    private static List<TextSplit> Split(string s, Trie trie)
    {
        var splits = new List<TextSplit>();
        int offset = 0, i = 0;
        while (!trie.IsEmpty && i < s.Length)
        {
            var token = trie.LongestAt(s, i, out int end);
            if (token is null) { i++; continue; }
            int start = i;
            i = end;
            if (token.SingleWord && (EndsWithWord(s, start) || StartsWithWord(s, end))) continue;
            if (token.LStrip)
            {
                int k = start;
                while (k > 0 && char.IsWhiteSpace(s[k - 1])) k--;
                start = Math.Max(k, offset);
            }
            if (token.RStrip)
                while (end < s.Length && char.IsWhiteSpace(s[end])) end++;
            if (offset < start) splits.Add(new TextSplit(offset, start, null));
            splits.Add(new TextSplit(start, end, token.Id));
            offset = end;
        }
        if (offset < s.Length) splits.Add(new TextSplit(offset, s.Length, null));
        return splits;
    }

    private static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || c == '_';

    private static bool EndsWithWord(string s, int index) => index > 0 && IsWordChar(s[index - 1]);

    private static bool StartsWithWord(string s, int index) => index < s.Length && IsWordChar(s[index]);

    /// <summary>A character trie for leftmost-longest matching of token contents.</summary>
    private sealed class Trie
    {
        private sealed class Node
        {
            public readonly Dictionary<char, Node> Next = [];
            public AddedToken? Token;
        }

        private readonly Node _root = new();

        public bool IsEmpty => _root.Next.Count == 0;

        public void Add(string content, AddedToken token)
        {
            var node = _root;
            foreach (char c in content)
            {
                if (!node.Next.TryGetValue(c, out var child)) node.Next[c] = child = new Node();
                node = child;
            }
            node.Token ??= token;
        }

        public AddedToken? LongestAt(string s, int start, out int end)
        {
            AddedToken? best = null;
            end = start;
            var node = _root;
            for (int i = start; i < s.Length; i++)
            {
                if (!node.Next.TryGetValue(s[i], out var child)) break;
                node = child;
                if (node.Token is not null) { best = node.Token; end = i + 1; }
            }
            return best;
        }
    }
}
