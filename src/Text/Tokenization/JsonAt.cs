using System.Text.Json;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Text.Tokenization;

/// <summary>
/// A JSON value of a tokenizer file together with the file name and its key path, so that every
/// lookup that fails can say which file and which key is wrong.
/// </summary>
internal readonly record struct JsonAt(JsonElement Element, string File, string Path)
{
    public JsonValueKind Kind => Element.ValueKind;

    public bool IsNull => Element.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined;

    /// <summary>The member <paramref name="key"/>, or null when it is absent or JSON null.</summary>
    public JsonAt? Opt(string key)
    {
        if (Element.ValueKind != JsonValueKind.Object || !Element.TryGetProperty(key, out var v)) return null;
        if (v.ValueKind == JsonValueKind.Null) return null;
        return new JsonAt(v, File, Path.Length == 0 ? key : $"{Path}.{key}");
    }

    /// <summary>The member <paramref name="key"/>, which must be present and not null.</summary>
    public JsonAt Get(string key)
    {
        if (Element.ValueKind != JsonValueKind.Object)
            throw Bad($"expected an object, found {Element.ValueKind}");
        return Opt(key) ?? throw Fail.InFile(File, $"key '{Join(key)}'", "missing", "the tokenizer file looks incomplete; re-download it");
    }

    public string Str()
    {
        if (Element.ValueKind != JsonValueKind.String) throw Bad($"expected a string, found {Element.ValueKind}");
        return Element.GetString()!;
    }

    public int Int()
    {
        if (Element.ValueKind != JsonValueKind.Number || !Element.TryGetInt32(out int v))
            throw Bad($"expected an integer, found {Element}");
        return v;
    }

    public bool Bool()
    {
        if (Element.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
            throw Bad($"expected true or false, found {Element}");
        return Element.GetBoolean();
    }

    public string? OptStr(string key) => Opt(key)?.Str();

    public bool OptBool(string key, bool fallback) => Opt(key)?.Bool() ?? fallback;

    public IEnumerable<JsonAt> Items()
    {
        if (Element.ValueKind != JsonValueKind.Array) throw Bad($"expected an array, found {Element.ValueKind}");
        int i = 0;
        foreach (var item in Element.EnumerateArray())
            yield return new JsonAt(item, File, $"{Path}[{i++}]");
    }

    public IEnumerable<(string Name, JsonAt Value)> Members()
    {
        if (Element.ValueKind != JsonValueKind.Object) throw Bad($"expected an object, found {Element.ValueKind}");
        foreach (var p in Element.EnumerateObject())
            yield return (p.Name, new JsonAt(p.Value, File, Path.Length == 0 ? p.Name : $"{Path}.{p.Name}"));
    }

    /// <summary>The "type" member of a component (normalizer, pre-tokenizer, ...).</summary>
    public string TypeName => Get("type").Str();

    /// <summary>A component type this implementation does not know: names the type, the key and the file.</summary>
    public UserError Unsupported(string kind, string supported) =>
        Fail.InFile(File, $"key '{Path}'", $"unsupported {kind} type '{TypeName}'", $"supported {kind} types are {supported}");

    public UserError Bad(string what) =>
        Fail.InFile(File, $"key '{(Path.Length == 0 ? "(root)" : Path)}'", what, "the tokenizer file does not have the layout of a Hugging Face tokenizer.json");

    private string Join(string key) => Path.Length == 0 ? key : $"{Path}.{key}";

    /// <summary>Parses a whole JSON file; a syntax error names the file and the position.</summary>
    public static JsonDocument ParseFile(string file)
    {
        if (!System.IO.File.Exists(file))
            throw Fail.User($"tokenizer file '{file}' not found", "pass the path of an existing tokenizer.json");
        try
        {
            using var stream = System.IO.File.OpenRead(file);
            return JsonDocument.Parse(stream, new JsonDocumentOptions { MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw Fail.InFile(file, $"line {(e.LineNumber ?? 0) + 1}", $"malformed JSON ({e.Message})", "re-download or fix the file");
        }
    }
}
