using System.CommandLine;
using System.Text.Encodings.Web;
using System.Text.Json;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.Text.Tokenization;

namespace MixLoRA.Cli;

/// <summary>
/// `mixlora-data tokenize --tokenizer FILE --input FILE.jsonl --out FILE.jsonl`: reads records {"text": ...}
/// and writes {"text", "input_ids"} (ids as HF `encode(text)`, with special tokens), atomically.
/// </summary>
public static class DataTokenizeCommand
{
    private const int Batch = 2048;

    /// <summary>Runs with the arguments after `tokenize`; user mistakes are thrown as <see cref="UserError"/>.</summary>
    public static int Run(string[] args)
    {
        var tokenizer = new Option<FileInfo>("--tokenizer") { Description = "tokenizer.json (or a model folder holding one)", Required = true };
        var input = new Option<FileInfo>("--input") { Description = "JSONL file, one {\"text\": ...} per line", Required = true };
        var output = new Option<FileInfo>("--out") { Description = "JSONL file to write {\"text\", \"input_ids\"} to", Required = true };
        var command = new RootCommand("Tokenize the \"text\" of JSONL records with a Hugging Face tokenizer.json") { tokenizer, input, output };
        command.SetAction(parse =>
        {
            string path = parse.GetValue(tokenizer)!.FullName;
            var tok = Directory.Exists(path) ? HfTokenizer.FromDirectory(path) : HfTokenizer.Load(path);
            var (records, tokens) = TokenizeFile(tok, parse.GetValue(input)!.FullName, parse.GetValue(output)!.FullName);
            Console.WriteLine($"tokenized {records} records ({tokens} tokens) -> {parse.GetValue(output)!.FullName}");
            return 0;
        });
        return command.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }

    /// <summary>Tokenizes every record of <paramref name="input"/> into <paramref name="output"/>; returns (records, tokens).</summary>
    public static (int Records, long Tokens) TokenizeFile(ITokenizer tokenizer, string input, string output)
    {
        if (!File.Exists(input)) throw Fail.User($"input file '{input}' not found", "pass an existing JSONL file with --input");
        int records = 0;
        long tokens = 0;
        AtomicFile.Write(output, stream =>
        {
            using var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
            foreach (var batch in ReadTexts(input).Chunk(Batch))
            {
                var ids = new IReadOnlyList<int>[batch.Length];
                Parallel.For(0, batch.Length, i => ids[i] = tokenizer.Encode(batch[i]));
                for (int i = 0; i < batch.Length; i++)
                {
                    Write(writer, batch[i], ids[i]);
                    stream.WriteByte((byte)'\n');
                    tokens += ids[i].Count;
                }
                records += batch.Length;
            }
        });
        return (records, tokens);
    }

    private static void Write(Utf8JsonWriter writer, string text, IReadOnlyList<int> ids)
    {
        writer.WriteStartObject();
        writer.WriteString("text", text);
        writer.WriteStartArray("input_ids");
        foreach (int id in ids) writer.WriteNumberValue(id);
        writer.WriteEndArray();
        writer.WriteEndObject();
        writer.Flush();
        writer.Reset();
    }

    private static IEnumerable<string> ReadTexts(string input)
    {
        int lineNo = 0;
        foreach (var line in File.ReadLines(input))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            yield return TextOf(line, input, lineNo);
        }
    }

    private static string TextOf(string line, string file, int lineNo)
    {
        const string fix = "each line must be one JSON object like {\"text\": \"...\"}";
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(line);
        }
        catch (JsonException e)
        {
            throw Fail.InFile(file, $"line {lineNo}", $"not valid JSON ({e.Message})", fix);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("text", out var text))
                throw Fail.InFile(file, $"line {lineNo}", "record has no \"text\" key", fix);
            if (text.ValueKind != JsonValueKind.String)
                throw Fail.InFile(file, $"line {lineNo}", $"\"text\" is {text.ValueKind}, not a string", fix);
            return text.GetString()!;
        }
    }
}
