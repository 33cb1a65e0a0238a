using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.Models;

namespace MixLoRA.Text.Tokenization;

/// <summary>
/// A Hugging Face <c>tokenizer_config.json</c> derived from a tokenizer.json and the model's config.json, for
/// model folders that have none, so that hosts reading the pair (onnxruntime-extensions inside ONNX Runtime
/// GenAI, which refuses a folder without it; transformers) see the special tokens and BOS/EOS behaviour
/// <see cref="HfTokenizer"/> uses:
/// <list type="bullet">
/// <item><c>tokenizer_class</c>: <c>LlamaTokenizerFast</c> for SentencePiece-style files (a <c>▁</c> in the
/// normalizer, pre-tokenizer or decoder, or Metaspace), else <c>Qwen2TokenizerFast</c> for qwen2 models and
/// <c>PreTrainedTokenizerFast</c> (as LLaMA-3 ships) for other byte-level files;</item>
/// <item><c>bos_token</c>/<c>eos_token</c>: the tokens of the ids <see cref="HfTokenizer"/> resolves from the
/// tokenizer.json alone (post-processor, well-known names), else of config.json's ids; <c>pad_token</c>: the
/// tokenizer's (null when it has none); <c>unk_token</c>: the BPE model's;</item>
/// <item><c>add_bos_token</c>/<c>add_eos_token</c>: whether the post-processor puts exactly that BOS before /
/// that EOS after a sequence;</item>
/// <item><c>model_max_length</c>: config.json's max_position_embeddings; <c>clean_up_tokenization_spaces</c>:
/// false (decoding is the tokenizer.json decoder's, as in <see cref="HfTokenizer.Decode"/>).</item>
/// </list>
/// </summary>
public static class TokenizerConfigFile
{
    public const string FileName = "tokenizer_config.json";

    /// <summary>The config for <paramref name="tokenizerFile"/> (a tokenizer_config.json beside it is not read).</summary>
    public static JsonObject Derive(string tokenizerFile, ModelConfig model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var tok = HfTokenizer.Load(tokenizerFile, readConfig: false);
        using var doc = JsonAt.ParseFile(tokenizerFile);
        var root = doc.RootElement;
        var bos = tok.BosId ?? model.BosTokenId;
        var eos = tok.EosId ?? (model.EosTokenIds.Length > 0 ? model.EosTokenIds[0] : null);
        string? Token(int? id) => id is { } i ? tok.IdToToken(i) : null;
        var unk = root.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.Object
            && m.TryGetProperty("unk_token", out var u) && u.ValueKind == JsonValueKind.String ? u.GetString() : null;
        return new JsonObject
        {
            ["add_bos_token"] = bos is { } b && tok.SpecialPrefix.SequenceEqual([b]),
            ["add_eos_token"] = eos is { } e && tok.SpecialSuffix.SequenceEqual([e]),
            ["bos_token"] = Token(bos),
            ["clean_up_tokenization_spaces"] = false,
            ["eos_token"] = Token(eos),
            ["model_max_length"] = model.MaxPositionEmbeddings,
            ["pad_token"] = Token(tok.PadId),
            ["tokenizer_class"] = TokenizerClass(root, model.ModelType),
            ["unk_token"] = unk,
        };
    }

    /// <summary>Writes the config derived from <paramref name="tokenizerFile"/> to <paramref name="path"/>.</summary>
    public static void Write(string path, string tokenizerFile, ModelConfig model) =>
        AtomicFile.WriteAllText(path, Derive(tokenizerFile, model).ToJsonString(Options) + "\n");

    private static readonly JsonSerializerOptions Options = new() { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private static string TokenizerClass(JsonElement root, string modelType)
    {
        static bool SentencePiece(string s) => s == "Metaspace" || s.Contains('\u2581', StringComparison.Ordinal);
        var spm = new[] { "normalizer", "pre_tokenizer", "decoder" }.Any(k => root.TryGetProperty(k, out var n) && AnyString(n, SentencePiece));
        if (spm) return "LlamaTokenizerFast";
        return modelType == "qwen2" ? "Qwen2TokenizerFast" : "PreTrainedTokenizerFast";
    }

    /// <summary>Whether a string anywhere in <paramref name="e"/> (values, not keys) satisfies <paramref name="test"/>.</summary>
    private static bool AnyString(JsonElement e, Func<string, bool> test) => e.ValueKind switch
    {
        JsonValueKind.String => test(e.GetString()!),
        JsonValueKind.Object => e.EnumerateObject().Any(p => AnyString(p.Value, test)),
        JsonValueKind.Array => e.EnumerateArray().Any(x => AnyString(x, test)),
        _ => false,
    };
}
