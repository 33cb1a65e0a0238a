using System.Globalization;
using System.Text.Json;

namespace MixLoRA.Cli.Bench;

/// <summary>
/// Reads the ORT profiles a profiled bench wrote (PREFIX*.json: chrome-trace events, one "Node" event per
/// kernel run with its duration in µs) and reports where the time went: per op type, the top nodes, and
/// which execution providers ran nodes (a CPU entry under CUDA is a fallback). On CUDA the node times are
/// host-side launch times unless the provider synchronizes; use nsys for kernel times there.
/// </summary>
public static class ProfileSummary
{
    public sealed record Entry(string Name, string Op, string Provider, double Us);

    public static IReadOnlyList<Entry> Read(string prefix)
    {
        var full = Path.GetFullPath(prefix);
        var dir = Path.GetDirectoryName(full)!;
        var entries = new List<Entry>();
        foreach (var file in Directory.GetFiles(dir, Path.GetFileName(full) + "*.json"))
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            foreach (var e in doc.RootElement.EnumerateArray())
            {
                if (!e.TryGetProperty("cat", out var cat) || cat.GetString() != "Node") continue;
                var name = e.GetProperty("name").GetString() ?? "";
                if (!name.EndsWith("_kernel_time", StringComparison.Ordinal)) continue;
                var args = e.GetProperty("args");
                entries.Add(new Entry(name[..^"_kernel_time".Length], Str(args, "op_name"), Str(args, "provider"), e.GetProperty("dur").GetDouble()));
            }
        }
        return entries;
    }

    public static void Report(string prefix, TextWriter log, int top = 15)
    {
        var entries = Read(prefix);
        var total = entries.Sum(e => e.Us);
        if (total <= 0)
        {
            log.WriteLine($"profile: no node events in {prefix}*.json");
            return;
        }
        log.WriteLine($"profile: {entries.Count} node runs, {total / 1000:F1} ms of kernel time");
        foreach (var g in entries.GroupBy(e => e.Provider)) log.WriteLine($"  provider {g.Key}: {g.Select(e => e.Name).Distinct().Count()} nodes, {Share(g.Sum(e => e.Us), total)}");
        log.WriteLine("  by op type:");
        foreach (var g in entries.GroupBy(e => e.Op).OrderByDescending(g => g.Sum(e => e.Us)).Take(top))
            log.WriteLine($"    {g.Key,-28} {Share(g.Sum(e => e.Us), total)}  ({g.Count()} runs)");
        log.WriteLine("  top nodes:");
        foreach (var g in entries.GroupBy(e => e.Name).OrderByDescending(g => g.Sum(e => e.Us)).Take(top))
            log.WriteLine($"    {g.First().Op,-16} {Share(g.Sum(e => e.Us), total)}  {g.Key}");
    }

    private static string Share(double us, double total) =>
        string.Create(CultureInfo.InvariantCulture, $"{us / 1000,9:F1} ms {100 * us / total,5:F1}%");

    private static string Str(JsonElement args, string key) => args.TryGetProperty(key, out var v) ? v.GetString() ?? "" : "";
}
