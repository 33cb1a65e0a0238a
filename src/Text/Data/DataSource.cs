namespace MixLoRA.Text.Data;

/// <summary>One `--data` argument: a JSON/JSONL file and, when given as `TASK:PATH`, its forced task.</summary>
public sealed record DataSource(string Path, TaskType? Task = null)
{
    /// <summary>
    /// Parses `PATH` or `TASK:PATH`. The text before the first `:` counts as a task only when it is a
    /// known task name, so paths that contain `:` still work.
    /// </summary>
    public static DataSource Parse(string arg)
    {
        int colon = arg.IndexOf(':', StringComparison.Ordinal);
        if (colon > 0 && TaskType.Known.TryGetValue(arg[..colon], out var task))
            return new DataSource(arg[(colon + 1)..], task);
        var prefix = colon > 0 ? arg[..colon] : "";
        var rest = colon > 0 ? arg[(colon + 1)..] : "";
        if (prefix.Length > 0 && !File.Exists(arg) && (File.Exists(rest) || Directory.Exists(rest)) && prefix.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
        {
            throw GraphBuilder.Fail.User($"unknown task '{prefix}' in --data {arg}",
                $"use one of {string.Join(", ", TaskType.Known.Keys.Order(StringComparer.Ordinal))} before the ':', or a bare FILE to detect it");
        }
        return new DataSource(arg);
    }

    public override string ToString() => Task is null ? Path : $"{Task.Name}:{Path}";
}
