using System.Collections.Concurrent;
using System.Text;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Text.Tokenization;

/// <summary>Options of a tokenizer.json BPE model besides vocab and merges.</summary>
internal sealed record BpeOptions(
    string? UnkToken, bool FuseUnk, bool ByteFallback, string Prefix, string Suffix, bool IgnoreMerges);

/// <summary>
/// The BPE model of HF tokenizers: a word becomes one symbol per character (or byte-fallback bytes,
/// or unk), then the adjacent pair of lowest merge rank is merged (leftmost first) until none applies.
/// Merges run on a doubly linked symbol list with a priority queue; results of short words are cached.
/// </summary>
internal sealed class BpeModel
{
    private const int MaxCachedWordLength = 256;
    private const int CacheCapacity = 100_000;

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabSpan;
    private readonly Dictionary<long, long> _merges; // (left id, right id) -> (rank << 32 | new id)
    private readonly string?[] _idToToken;
    private readonly int[] _byteIds;
    private readonly int? _unkId;
    private readonly BpeOptions _options;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private int _cached;

    private BpeModel(Dictionary<string, int> vocab, Dictionary<long, long> merges, BpeOptions options, int? unkId)
    {
        _vocab = vocab;
        _vocabSpan = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _merges = merges;
        _options = options;
        _unkId = unkId;
        _idToToken = new string?[vocab.Count == 0 ? 0 : vocab.Values.Max() + 1];
        foreach (var (token, id) in vocab) _idToToken[id] = token;
        _byteIds = new int[256];
        for (int b = 0; b < 256; b++)
            _byteIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
    }

    /// <summary>One past the largest model id.</summary>
    public int Size => _idToToken.Length;

    public IReadOnlyDictionary<string, int> Vocab => _vocab;

    public string? IdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;

    /// <summary>Reads `model` of a tokenizer.json; only type BPE is supported.</summary>
    public static BpeModel From(JsonAt model)
    {
        string type = model.Opt("type")?.Str() ?? (model.Opt("merges") is null ? "(missing)" : "BPE");
        if (type != "BPE")
            throw Fail.InFile(model.File, "key 'model.type'", $"unsupported model type '{type}'",
                "only BPE tokenizers (LLaMA, Mistral, Qwen, GPT-2 style) are supported");
        if (model.Opt("dropout") is { } d && (d.Kind != System.Text.Json.JsonValueKind.Number || d.Element.GetDouble() > 0))
            throw d.Bad($"BPE dropout {d.Element} is a training-time randomization and is not supported; set it to null");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (name, value) in model.Get("vocab").Members()) vocab[name] = value.Int();
        var options = new BpeOptions(
            model.OptStr("unk_token"), model.OptBool("fuse_unk", false), model.OptBool("byte_fallback", false),
            model.OptStr("continuing_subword_prefix") ?? "", model.OptStr("end_of_word_suffix") ?? "",
            model.OptBool("ignore_merges", false));
        int? unkId = null;
        if (options.UnkToken is { } unk)
            unkId = vocab.TryGetValue(unk, out int u) ? u : throw model.Get("unk_token").Bad($"unk_token '{unk}' is not in the vocab");
        return new BpeModel(vocab, ReadMerges(model.Get("merges"), vocab, options.Prefix), options, unkId);
    }

    private static Dictionary<long, long> ReadMerges(JsonAt merges, Dictionary<string, int> vocab, string prefix)
    {
        var result = new Dictionary<long, long>(merges.Element.GetArrayLength());
        long rank = 0;
        foreach (var item in merges.Items())
        {
            string a, b;
            if (item.Kind == System.Text.Json.JsonValueKind.String)
            {
                string line = item.Str();
                int space = line.IndexOf(' ', StringComparison.Ordinal);
                if (space < 0) throw item.Bad($"merge '{line}' is not two tokens separated by a space");
                (a, b) = (line[..space], line[(space + 1)..]);
            }
            else
            {
                var parts = item.Items().Select(p => p.Str()).ToArray();
                if (parts.Length != 2) throw item.Bad("a merge must be two tokens");
                (a, b) = (parts[0], parts[1]);
            }
            int ia = Lookup(vocab, a, item), ib = Lookup(vocab, b, item);
            string merged = a + (b.Length >= prefix.Length ? b[prefix.Length..] : "");
            int created = Lookup(vocab, merged, item);
            result[Key(ia, ib)] = (rank++ << 32) | (uint)created;
        }
        return result;
    }

    private static int Lookup(Dictionary<string, int> vocab, string token, JsonAt where) =>
        vocab.TryGetValue(token, out int id) ? id : throw where.Bad($"merge token '{token}' is not in the vocab");

    private static long Key(int a, int b) => ((long)a << 32) | (uint)b;

    /// <summary>Appends the ids of one pre-tokenized word.</summary>
    public void Tokenize(string word, List<int> output)
    {
        if (word.Length == 0) return;
        if (_options.IgnoreMerges && _vocab.TryGetValue(word, out int whole))
        {
            output.Add(whole);
            return;
        }
        if (_cache.TryGetValue(word, out var cached))
        {
            output.AddRange(cached);
            return;
        }
        var ids = MergeWord(word);
        if (word.Length < MaxCachedWordLength && Volatile.Read(ref _cached) < CacheCapacity && _cache.TryAdd(word, ids))
            Interlocked.Increment(ref _cached);
        output.AddRange(ids);
    }

    private int[] MergeWord(string word)
    {
        var symbols = new List<int>(word.Length);
        int? pendingUnk = null;
        for (int i = 0; i < word.Length;)
        {
            int width = char.IsHighSurrogate(word[i]) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]) ? 2 : 1;
            bool first = i == 0, last = i + width == word.Length;
            int? id = LookupSymbol(word.AsSpan(i, width), first, last, out string? withAffixes);
            i += width;
            if (id is { } found)
            {
                if (pendingUnk is { } u) { symbols.Add(u); pendingUnk = null; }
                symbols.Add(found);
                continue;
            }
            if (_options.ByteFallback && TryByteFallback(withAffixes ?? word.Substring(i - width, width), symbols)) continue;
            if (_unkId is { } unk)
            {
                if (pendingUnk is { } u && !_options.FuseUnk) symbols.Add(u);
                pendingUnk = unk;
            }
        }
        if (pendingUnk is { } tail) symbols.Add(tail);
        return MergeAll(symbols);
    }

    private int? LookupSymbol(ReadOnlySpan<char> ch, bool first, bool last, out string? withAffixes)
    {
        withAffixes = null;
        bool prefix = !first && _options.Prefix.Length > 0, suffix = last && _options.Suffix.Length > 0;
        if (!prefix && !suffix) return _vocabSpan.TryGetValue(ch, out int id) ? id : null;
        withAffixes = (prefix ? _options.Prefix : "") + ch.ToString() + (suffix ? _options.Suffix : "");
        return _vocab.TryGetValue(withAffixes, out int id2) ? id2 : null;
    }

    private bool TryByteFallback(string symbol, List<int> symbols)
    {
        var bytes = Encoding.UTF8.GetBytes(symbol);
        foreach (byte b in bytes)
            if (_byteIds[b] < 0) return false;
        foreach (byte b in bytes) symbols.Add(_byteIds[b]);
        return true;
    }

    private int[] MergeAll(List<int> ids)
    {
        int n = ids.Count;
        if (n < 2) return [.. ids];
        var c = ids.ToArray();
        var prev = new int[n];
        var next = new int[n];
        var alive = new bool[n];
        var queue = new PriorityQueue<long, long>(n);
        for (int i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
            alive[i] = true;
            if (i + 1 < n) Push(queue, i, c[i], c[i + 1]);
        }
        while (queue.TryDequeue(out long entry, out _))
        {
            int pos = (int)(entry >> 32), newId = (int)(uint)entry;
            if (!alive[pos] || next[pos] < 0) continue;
            int right = next[pos];
            if (!_merges.TryGetValue(Key(c[pos], c[right]), out long m) || (int)(uint)m != newId) continue;
            c[pos] = newId;
            alive[right] = false;
            next[pos] = next[right];
            if (next[right] >= 0) prev[next[right]] = pos;
            if (prev[pos] >= 0) Push(queue, prev[pos], c[prev[pos]], c[pos]);
            if (next[pos] >= 0) Push(queue, pos, c[pos], c[next[pos]]);
        }
        var result = new List<int>(n);
        for (int i = 0; i < n; i++)
            if (alive[i]) result.Add(c[i]);
        return [.. result];
    }

    private void Push(PriorityQueue<long, long> queue, int pos, int left, int right)
    {
        if (!_merges.TryGetValue(Key(left, right), out long m)) return;
        long rank = m >> 32;
        queue.Enqueue(((long)pos << 32) | (uint)m, (rank << 32) | (uint)pos);
    }
}
