using System.Text.Json;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Cli.Bench;

/// <summary>
/// Record lengths for `mixlora-bench --lengths`: a JSONL file (each line's `input_ids` array or `length`), or a
/// built-in histogram. Histogram lengths are a fixed sequence, no random generator, so other tools reproduce
/// them exactly (tools/ref_bench.py does): record i has the length at quantile u_i = frac((i + 1) · 0.6180339887498949)
/// of the histogram, linear inside a bin, floored. The built-in shapes are approximations of the ranges the
/// issue names (ARC prompts ~60-120 tokens, Alpaca records ~50-400 with a tail), not measured datasets.
/// </summary>
public sealed class LengthDistribution
{
    /// <summary>Bins (low, high, weight): lengths in [low, high) with that share.</summary>
    public static readonly IReadOnlyDictionary<string, (int Low, int High, double Weight)[]> BuiltIn = new Dictionary<string, (int, int, double)[]>
    {
        ["alpaca"] = [(50, 100, 0.25), (100, 150, 0.25), (150, 200, 0.17), (200, 300, 0.18), (300, 400, 0.10), (400, 600, 0.05)],
        ["arc"] = [(60, 80, 0.30), (80, 100, 0.40), (100, 120, 0.30)],
    };

    private const double Phi = 0.6180339887498949;
    private readonly int[]? _file;
    private readonly (int Low, int High, double Weight)[]? _bins;

    private LengthDistribution(string name, int[]? file, (int, int, double)[]? bins) => (Name, _file, _bins) = (name, file, bins);

    public string Name { get; }

    /// <summary>`alpaca`, `arc` or a JSONL file.</summary>
    public static LengthDistribution Parse(string source)
    {
        if (BuiltIn.TryGetValue(source, out var bins)) return new(source, null, bins);
        Fail.If(!File.Exists(source), $"--lengths {source} is neither a built-in histogram nor a file", $"use {string.Join(", ", BuiltIn.Keys)} or a JSONL file of records");
        var lengths = new List<int>();
        var n = 0;
        foreach (var line in File.ReadLines(source))
        {
            n++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            lengths.Add(LineLength(source, n, line));
        }
        Fail.If(lengths.Count == 0, $"{source} holds no records", "give a JSONL file with one record per line");
        return new(Path.GetFileName(source), [.. lengths], null);
    }

    private static int LineLength(string file, int n, string line)
    {
        try
        {
            using var doc = JsonDocument.Parse(line);
            var r = doc.RootElement;
            var len = r.TryGetProperty("input_ids", out var ids) ? ids.GetArrayLength() : r.TryGetProperty("length", out var l) ? l.GetInt32() : -1;
            return len >= 1 ? len : throw Fail.InFile(file, $"line {n}", "has no input_ids array or positive length", "give each record \"input_ids\": [...] or \"length\": N");
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            throw Fail.InFile(file, $"line {n}", $"is not a JSON record ({e.Message})", "give each record \"input_ids\": [...] or \"length\": N");
        }
    }

    /// <summary>The length of record <paramref name="i"/>, at most <paramref name="max"/> (longer records are cut, as --cutoff-len does).</summary>
    public int Length(int i, int max)
    {
        if (_file is { } f) return Math.Min(f[i % f.Length], max);
        var u = ((i + 1) * Phi) % 1.0;
        var (cum, bins) = (0.0, _bins!);
        var total = bins.Sum(b => b.Weight);
        foreach (var (low, high, w) in bins)
        {
            if (u < cum + (w / total)) return Math.Min(low + (int)Math.Floor((u - cum) / (w / total) * (high - low)), max);
            cum += w / total;
        }
        return Math.Min(bins[^1].High - 1, max);
    }
}
