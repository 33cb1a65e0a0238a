using MixLoRA.GraphBuilder;

namespace MixLoRA.Text.Tokenization;

/// <summary>
/// A Hugging Face `tokenizer.json` (BPE model: SentencePiece-style with byte fallback as in LLaMA-2 /
/// Mistral, or byte-level as in LLaMA-3 / Qwen) that encodes and decodes exactly like HF `tokenizers`:
/// added tokens are cut out first, then normalizer, pre-tokenizer, BPE, and the post-processor's special
/// tokens when asked for. Thread-safe after loading.
/// </summary>
public sealed class HfTokenizer : ITokenizer
{
    private readonly AddedTokens _added;
    private readonly INormalizer? _normalizer;
    private readonly IPreTokenizer? _preTokenizer;
    private readonly BpeModel _model;
    private readonly IPostProcessor? _post;
    private readonly IDecoder? _decoder;
    private readonly Dictionary<string, int> _addedByContent = new(StringComparer.Ordinal);

    private HfTokenizer(string path, JsonAt root, bool readConfig)
    {
        Path = path;
        _model = BpeModel.From(root.Get("model"));
        _normalizer = Normalizers.From(root.Opt("normalizer"));
        _preTokenizer = PreTokenizers.From(root.Opt("pre_tokenizer"));
        _post = PostProcessors.From(root.Opt("post_processor"));
        _decoder = Decoders.From(root.Opt("decoder"));
        var added = root.Opt("added_tokens")?.Items().Select(ReadAdded).ToList() ?? [];
        _added = new AddedTokens(added, _normalizer);
        foreach (var t in added) _addedByContent.TryAdd(t.Content, t.Id);
        VocabSize = Math.Max(_model.Size, added.Count == 0 ? 0 : added.Max(t => t.Id) + 1);
        (BosId, EosId, PadId) = SpecialTokenIds.Resolve(path, TokenToId, _post, _added, readConfig);
    }

    /// <summary>The tokenizer.json this was loaded from.</summary>
    public string Path { get; }

    /// <summary>One past the largest id of the model vocab and the added tokens (the embedding rows a model needs).</summary>
    public int VocabSize { get; }

    public int? BosId { get; }

    public int? EosId { get; }

    public int? PadId { get; }

    /// <summary>The special ids the post-processor puts before a single sequence (BOS for LLaMA-2).</summary>
    public IReadOnlyList<int> SpecialPrefix => _post?.Prefix ?? [];

    /// <summary>The special ids the post-processor puts after a single sequence.</summary>
    public IReadOnlyList<int> SpecialSuffix => _post?.Suffix ?? [];

    /// <summary>The `added_tokens` of the file (special and not).</summary>
    public IReadOnlyCollection<AddedToken> AddedTokens => _added.All;

    /// <summary>Loads a tokenizer.json; missing files, malformed JSON and unsupported components are UserErrors naming the file.</summary>
    public static HfTokenizer Load(string path) => Load(path, readConfig: true);

    /// <summary>Loads a tokenizer.json; <paramref name="readConfig"/> false ignores a tokenizer_config.json beside it.</summary>
    internal static HfTokenizer Load(string path, bool readConfig)
    {
        using var doc = JsonAt.ParseFile(path);
        return new HfTokenizer(path, new JsonAt(doc.RootElement, path, ""), readConfig);
    }

    /// <summary>Loads `tokenizer.json` of a model folder (a Hugging Face checkpoint directory).</summary>
    public static HfTokenizer FromDirectory(string modelDir)
    {
        if (!Directory.Exists(modelDir))
            throw Fail.User($"model folder '{modelDir}' not found", "pass the folder of a Hugging Face checkpoint");
        string file = System.IO.Path.Combine(modelDir, "tokenizer.json");
        if (!File.Exists(file))
            throw Fail.User($"model folder '{modelDir}' has no tokenizer.json",
                "copy the checkpoint's tokenizer.json into it (older checkpoints with only tokenizer.model: convert it with `transformers`, AutoTokenizer.from_pretrained(dir).save_pretrained(dir))");
        return Load(file);
    }

    /// <summary>The id of a token string: an added token's content or a model vocab entry.</summary>
    public int? TokenToId(string token) =>
        _addedByContent.TryGetValue(token, out int id) ? id : _model.Vocab.TryGetValue(token, out id) ? id : null;

    /// <summary>The token string of an id, or null when the id is unknown.</summary>
    public string? IdToToken(int id) => _added.ById(id)?.Content ?? _model.IdToToken(id);

    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        if (addSpecialTokens && _post is not null) ids.AddRange(_post.Prefix);
        foreach (var raw in _added.SplitRaw(text))
        {
            if (raw.Id is { } rawId) { ids.Add(rawId); continue; }
            string part = text[raw.Start..raw.End];
            string normalized = _normalizer?.Normalize(part) ?? part;
            foreach (var split in _added.SplitNormalized(normalized))
            {
                if (split.Id is { } id) { ids.Add(id); continue; }
                List<Piece> pieces = [new(normalized[split.Start..split.End], raw.Start == 0 && split.Start == 0)];
                if (_preTokenizer is not null) pieces = _preTokenizer.PreTokenize(pieces);
                foreach (var piece in pieces) _model.Tokenize(piece.Text, ids);
            }
        }
        if (addSpecialTokens && _post is not null) ids.AddRange(_post.Suffix);
        return ids;
    }

    /// <summary>HF decode: unknown ids are skipped, special added tokens too when asked, then the decoder runs.</summary>
    public string Decode(IReadOnlyList<int> ids, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var tokens = new List<string>(ids.Count);
        foreach (int id in ids)
        {
            if (skipSpecialTokens && _added.IsSpecial(id)) continue;
            if (IdToToken(id) is { } token) tokens.Add(token);
        }
        return _decoder is null ? string.Join(' ', tokens) : string.Concat(_decoder.DecodeChain(tokens));
    }

    /// <summary>An added token; as in HF, `normalized` defaults to the opposite of `special`.</summary>
    private static AddedToken ReadAdded(JsonAt n)
    {
        bool special = n.OptBool("special", false);
        return new AddedToken(n.Get("id").Int(), n.Get("content").Str(), n.OptBool("single_word", false),
            n.OptBool("lstrip", false), n.OptBool("rstrip", false), n.OptBool("normalized", !special), special);
    }
}
