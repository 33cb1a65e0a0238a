using System.Text.Json.Nodes;
using MixLoRA.Text.Tokenization;

namespace MixLoRA.Trainer.Tests.Tokenization;

/// <summary>Writes small hand-made tokenizer.json files into a temp folder for unit tests.</summary>
internal sealed class TinyTokenizer : IDisposable
{
    public string Dir { get; } = Directory.CreateTempSubdirectory("mixlora-tok-").FullName;

    public string File => Path.Combine(Dir, "tokenizer.json");

    public static JsonObject Bpe(string[] vocab, JsonArray merges, bool byteFallback = false, string? unk = null, bool fuseUnk = false)
    {
        var v = new JsonObject();
        for (int i = 0; i < vocab.Length; i++) v[vocab[i]] = i;
        return new JsonObject
        {
            ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = unk, ["fuse_unk"] = fuseUnk,
            ["byte_fallback"] = byteFallback, ["vocab"] = v, ["merges"] = merges,
        };
    }

    public static JsonObject Added(int id, string content, bool singleWord = false, bool lstrip = false, bool rstrip = false, bool special = true) =>
        new()
        {
            ["id"] = id, ["content"] = content, ["single_word"] = singleWord, ["lstrip"] = lstrip, ["rstrip"] = rstrip,
            ["normalized"] = false, ["special"] = special,
        };

    public HfTokenizer Load(JsonObject model, JsonArray? added = null, JsonNode? normalizer = null,
        JsonNode? preTokenizer = null, JsonNode? postProcessor = null, JsonNode? decoder = null)
    {
        Write(model, added, normalizer, preTokenizer, postProcessor, decoder);
        return HfTokenizer.Load(File);
    }

    public void Write(JsonObject model, JsonArray? added = null, JsonNode? normalizer = null,
        JsonNode? preTokenizer = null, JsonNode? postProcessor = null, JsonNode? decoder = null)
    {
        var root = new JsonObject
        {
            ["version"] = "1.0", ["truncation"] = null, ["padding"] = null, ["added_tokens"] = added ?? [],
            ["normalizer"] = normalizer, ["pre_tokenizer"] = preTokenizer, ["post_processor"] = postProcessor,
            ["decoder"] = decoder, ["model"] = model,
        };
        System.IO.File.WriteAllText(File, root.ToJsonString());
    }

    public void Dispose() => Directory.Delete(Dir, true);
}
