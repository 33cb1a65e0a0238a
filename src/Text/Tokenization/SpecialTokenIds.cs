using System.Text.Json;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Text.Tokenization;

/// <summary>
/// Finds BOS/EOS/PAD ids. A `tokenizer_config.json` beside the tokenizer.json decides when it has the key
/// (`bos_token`, `eos_token`, `pad_token`: a string, an AddedToken object with "content", or null);
/// otherwise BOS/EOS come from the post-processor template and then from well-known added token names.
/// </summary>
internal static class SpecialTokenIds
{
    private static readonly string[] BosNames = ["<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"];
    private static readonly string[] EosNames = ["</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"];
    private static readonly string[] PadNames = ["<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>"];

    /// <summary>The ids; <paramref name="readConfig"/> false ignores a tokenizer_config.json beside the file.</summary>
    public static (int? Bos, int? Eos, int? Pad) Resolve(
        string tokenizerFile, Func<string, int?> tokenToId, IPostProcessor? post, AddedTokens added, bool readConfig = true)
    {
        string configFile = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(tokenizerFile)) ?? ".", TokenizerConfigFile.FileName);
        JsonDocument? config = readConfig && File.Exists(configFile) ? JsonAt.ParseFile(configFile) : null;
        using (config)
        {
            JsonAt? root = config is null ? null : new JsonAt(config.RootElement, configFile, "");
            int? bos = FromConfig(root, "bos_token", tokenToId, out bool hasBos);
            int? eos = FromConfig(root, "eos_token", tokenToId, out bool hasEos);
            int? pad = FromConfig(root, "pad_token", tokenToId, out bool hasPad);
            if (!hasBos) bos = post is { Prefix.Count: > 0 } ? post.Prefix[0] : Known(BosNames, added);
            if (!hasEos) eos = post is { Suffix.Count: > 0 } ? post.Suffix[^1] : Known(EosNames, added);
            if (!hasPad) pad = Known(PadNames, added);
            return (bos, eos, pad);
        }
    }

    private static int? FromConfig(JsonAt? root, string key, Func<string, int?> tokenToId, out bool present)
    {
        present = false;
        if (root is not { } r || r.Kind != JsonValueKind.Object || !r.Element.TryGetProperty(key, out _)) return null;
        present = true;
        if (r.Opt(key) is not { } value) return null;
        var content = value.Kind == JsonValueKind.Object ? value.Get("content") : value;
        string token = content.Str();
        return tokenToId(token) ?? throw Fail.InFile(r.File, $"key '{key}'",
            $"token '{token}' is neither an added token nor in the vocab of the tokenizer.json beside it",
            "fix the token name or use the matching tokenizer.json");
    }

    private static int? Known(string[] names, AddedTokens added)
    {
        foreach (var name in names)
            foreach (var t in added.All)
                if (t.Special && t.Content == name) return t.Id;
        return null;
    }
}
