using System.Text.Json;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Text.Data;

/// <summary>One record of a data file and where it sits there (for error messages).</summary>
public readonly record struct SourceRecord(JsonElement Value, string File, string Where);

/// <summary>
/// Reads the records of a data file: a JSON array of objects, or JSONL (one object per line, blank
/// lines skipped). The format is told by the first non-blank character (`[` = array). Any record that
/// does not parse is a <see cref="UserError"/> naming the file and line (JSONL) or line and byte (JSON).
/// </summary>
public static class RecordReader
{
    public static IReadOnlyList<SourceRecord> Read(string path)
    {
        if (Directory.Exists(path)) throw Fail.User($"data path '{path}' is a folder, not a file", "name a .json or .jsonl file with --data");
        if (!File.Exists(path))
            throw Fail.User($"data file '{path}' does not exist", "check the --data path");
        byte[] bytes = File.ReadAllBytes(path);
        GraphBuilder.IO.Utf8Text.Check(path, bytes);
        int start = bytes.AsSpan().StartsWith("\uFEFF"u8) ? 3 : 0;
        int first = start;
        while (first < bytes.Length && bytes[first] is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n') first++;
        var data = new ReadOnlyMemory<byte>(bytes, start, bytes.Length - start);
        return first < bytes.Length && bytes[first] == (byte)'[' ? ReadArray(path, data) : ReadLines(path, data);
    }

    static List<SourceRecord> ReadLines(string path, ReadOnlyMemory<byte> data)
    {
        var records = new List<SourceRecord>();
        int lineNo = 0, pos = 0;
        while (pos < data.Length)
        {
            int nl = data.Span[pos..].IndexOf((byte)'\n');
            int end = nl < 0 ? data.Length : pos + nl;
            lineNo++;
            var line = data[pos..end];
            pos = end + 1;
            if (line.Span.Trim(" \t\r"u8).IsEmpty) continue;
            string where = $"line {lineNo}";
            JsonElement value;
            try
            {
                using var doc = JsonDocument.Parse(line);
                value = doc.RootElement.Clone();
            }
            catch (JsonException e)
            {
                throw Fail.InFile(path, where, $"not valid JSON ({FirstSentence(e.Message)})",
                    "a .jsonl file holds one JSON object per line; a .json file holds one array of objects");
            }
            records.Add(Checked(new SourceRecord(value, path, where)));
        }
        return records;
    }

    static List<SourceRecord> ReadArray(string path, ReadOnlyMemory<byte> data)
    {
        var records = new List<SourceRecord>();
        var span = data.Span;
        var reader = new Utf8JsonReader(span);
        int line = 1, counted = 0;
        try
        {
            reader.Read();
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                int at = (int)reader.TokenStartIndex;
                line += span[counted..at].Count((byte)'\n');
                counted = at;
                var value = JsonElement.ParseValue(ref reader);
                records.Add(Checked(new SourceRecord(value, path, $"record {records.Count + 1} (line {line})")));
            }
            if (reader.TokenType != JsonTokenType.EndArray || reader.Read())
                throw Fail.InFile(path, $"byte {reader.BytesConsumed}", "the JSON array is not closed or is followed by more text",
                    "a .json file holds exactly one array of objects");
        }
        catch (JsonException e)
        {
            string where = e.LineNumber is long ln ? $"line {ln + 1}, byte {(e.BytePositionInLine ?? 0) + 1}" : "position unknown";
            throw Fail.InFile(path, where, $"not valid JSON ({FirstSentence(e.Message)})",
                "fix the JSON there (a .json file holds one array of objects; a .jsonl file one object per line)");
        }
        return records;
    }

    static SourceRecord Checked(SourceRecord r)
    {
        if (r.Value.ValueKind != JsonValueKind.Object)
            throw Fail.InFile(r.File, r.Where, $"a record must be a JSON object, not {r.Value.ValueKind}",
                "write each record as {\"field\": value, ...}");
        return r;
    }

    static string FirstSentence(string message)
    {
        int cut = message.IndexOf(". ", StringComparison.Ordinal);
        return cut < 0 ? message.TrimEnd('.') : message[..cut];
    }
}
