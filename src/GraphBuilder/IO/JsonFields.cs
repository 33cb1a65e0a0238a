using System.Text.Json;

namespace MixLoRA.GraphBuilder.IO;

/// <summary>
/// Typed access to the keys of one JSON object read from a user's file (config.json,
/// adapter_config.json). Every wrong or missing value becomes a <see cref="UserError"/> that names
/// the file and the key. A key whose value is JSON null counts as absent.
/// </summary>
public sealed class JsonFields
{
    private readonly JsonElement _obj;

    public string File { get; }

    /// <summary>Key prefix for nested objects, e.g. "rope_parameters.".</summary>
    public string Prefix { get; }

    public JsonFields(string file, JsonElement obj, string prefix = "")
    {
        File = file;
        Prefix = prefix;
        if (obj.ValueKind != JsonValueKind.Object)
            throw Fail.InFile(file, prefix.Length == 0 ? "top level" : $"key '{prefix.TrimEnd('.')}'",
                $"expected a JSON object, got {Kind(obj)}", "fix the JSON");
        _obj = obj;
    }

    /// <summary>Parses a JSON file whose top level is an object; bad JSON is a UserError naming the file.</summary>
    public static JsonFields Load(string file)
    {
        if (!System.IO.File.Exists(file)) throw Fail.User($"file not found: {file}", "check the path");
        var bytes = System.IO.File.ReadAllBytes(file);
        Utf8Text.Check(file, bytes);
        try
        {
            using var doc = JsonDocument.Parse(bytes,
                new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            return new JsonFields(file, doc.RootElement.Clone());
        }
        catch (JsonException e)
        {
            throw Fail.InFile(file, $"line {(e.LineNumber ?? 0) + 1}", $"invalid JSON ({e.Message})", "fix the JSON syntax");
        }
    }

    public IEnumerable<string> Keys => _obj.EnumerateObject().Select(p => p.Name);

    public bool Has(string key) => _obj.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null;

    public JsonElement? Get(string key) => Has(key) ? _obj.GetProperty(key) : null;

    public UserError Error(string key, string what, string fix) => Fail.InFile(File, $"key '{Prefix}{key}'", what, fix);

    public JsonElement Required(string key) =>
        Get(key) ?? throw Error(key, "missing required key", $"add \"{key}\" to the file");

    public int Int(string key) => AsInt(key, Required(key));

    public int? IntOpt(string key) => Get(key) is { } v ? AsInt(key, v) : null;

    public long Long(string key) => AsLong(key, Required(key));

    public double Double(string key) => AsDouble(key, Required(key));

    public double? DoubleOpt(string key) => Get(key) is { } v ? AsDouble(key, v) : null;

    public string Str(string key) => AsString(key, Required(key));

    public string? StrOpt(string key) => Get(key) is { } v ? AsString(key, v) : null;

    public bool Bool(string key, bool dflt) => Get(key) is { } v ? AsBool(key, v) : dflt;

    public bool? BoolOpt(string key) => Get(key) is { } v ? AsBool(key, v) : null;

    public JsonFields? ObjectOpt(string key) =>
        Get(key) is { } v
            ? v.ValueKind == JsonValueKind.Object
                ? new JsonFields(File, v, $"{Prefix}{key}.")
                : throw Error(key, $"expected a JSON object, got {Kind(v)}", "write an object { ... } or remove the key")
            : null;

    /// <summary>An int or a list of ints (as HF writes eos_token_id).</summary>
    public int[] IntOrIntList(string key)
    {
        if (Get(key) is not { } v) return [];
        if (v.ValueKind == JsonValueKind.Array) return v.EnumerateArray().Select(e => AsInt(key, e)).ToArray();
        return [AsInt(key, v)];
    }

    public int AsInt(string key, JsonElement v) =>
        v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i)
            ? i
            : throw Error(key, $"expected an integer, got {Raw(v)}", "write a whole number");

    public long AsLong(string key, JsonElement v) =>
        v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var i)
            ? i
            : throw Error(key, $"expected an integer, got {Raw(v)}", "write a whole number");

    public double AsDouble(string key, JsonElement v) =>
        v.ValueKind == JsonValueKind.Number
            ? v.GetDouble()
            : throw Error(key, $"expected a number, got {Raw(v)}", "write a number");

    public string AsString(string key, JsonElement v) =>
        v.ValueKind == JsonValueKind.String
            ? v.GetString()!
            : throw Error(key, $"expected a string, got {Raw(v)}", "write a quoted string");

    public bool AsBool(string key, JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => throw Error(key, $"expected true or false, got {Raw(v)}", "write true or false"),
    };

    internal static string Raw(JsonElement v)
    {
        var s = v.GetRawText();
        return s.Length > 60 ? s[..60] + "..." : s;
    }

    internal static string Kind(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.Array => "a list",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => "an object",
    };
}
