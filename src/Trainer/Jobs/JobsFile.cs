using System.Text.Json;
using System.Text.RegularExpressions;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Trainer.Jobs;

/// <summary>
/// One job of a jobs file: its name, adapter (folder or adapter_config.json), and the single-run options it
/// trains with (<see cref="Options"/>, with Artifacts set when the run starts).
/// </summary>
public sealed record JobSpec(string Name, string Adapter, TrainOptions Options);

/// <summary>
/// `--jobs jobs.json`: <c>{"jobs": [{"name": "a", "adapter": "DIR|adapter_config.json", "data": ["[TASK:]FILE", …],
/// "out": "DIR", …}]}</c> with mixlora-train's flags as snake_case keys (<see cref="Keys"/>). Relative paths are
/// relative to the jobs file's folder. Names are unique words ([A-Za-z0-9_-]), outputs distinct folders.
/// </summary>
public static partial class JobsFile
{
    /// <summary>Every key a job may hold.</summary>
    public static readonly IReadOnlyList<string> Keys =
    [
        "name", "adapter", "data", "out", "lr", "batch_size", "steps", "epochs", "weight_decay", "lr_scheduler", "warmup_steps",
        "max_grad_norm", "seed", "no_shuffle", "group_by_length", "template", "cutoff_len", "train_on_inputs", "eval_data",
        "eval_steps", "save_steps", "packing", "tokenizer", "save_bin",
    ];

    [GeneratedRegex("^[A-Za-z0-9_-]{1,64}$")]
    private static partial Regex NamePattern();

    public static IReadOnlyList<JobSpec> Load(string file)
    {
        var root = JsonFields.Load(file);
        foreach (var k in root.Keys.Where(k => k != "jobs")) throw root.Error(k, "is not a key of a jobs file", "write {\"jobs\": [ … ]}");
        var list = root.Required("jobs");
        if (list.ValueKind != JsonValueKind.Array || list.GetArrayLength() == 0) throw root.Error("jobs", "must be a non-empty array of jobs", "write \"jobs\": [{\"name\": …}, …]");
        var dir = Path.GetDirectoryName(Path.GetFullPath(file))!;
        var jobs = list.EnumerateArray().Select((e, i) => Job(new JsonFields(file, e, $"jobs[{i}]."), dir)).ToList();
        foreach (var g in jobs.GroupBy(j => j.Name).Where(g => g.Count() > 1))
            throw Fail.InFile(file, $"job '{g.Key}'", "the name is used twice", "give every job its own name");
        foreach (var g in jobs.GroupBy(j => Path.GetFullPath(j.Options.Out)).Where(g => g.Count() > 1))
            throw Fail.InFile(file, $"jobs {string.Join(", ", g.Select(j => j.Name))}", $"share the output folder {g.Key}", "give every job its own \"out\"");
        return jobs;
    }

    private static JobSpec Job(JsonFields f, string dir)
    {
        foreach (var k in f.Keys.Where(k => !Keys.Contains(k))) throw f.Error(k, "is not a job key", $"use one of {string.Join(", ", Keys)}");
        var name = f.Str("name");
        if (!NamePattern().IsMatch(name)) throw f.Error("name", $"'{name}' is not a job name", "use letters, digits, '-' and '_' (at most 64)");
        string Abs(string p) => Path.IsPathRooted(p) ? p : Path.GetFullPath(Path.Combine(dir, p));
        IReadOnlyList<DataSource> Sources(string key)
        {
            if (f.Get(key) is not { } v) return [];
            var items = v.ValueKind == JsonValueKind.Array ? v.EnumerateArray().ToArray() : [v];
            if (items.Any(e => e.ValueKind != JsonValueKind.String)) throw f.Error(key, "must be a string or an array of strings", "write [\"[TASK:]FILE\", …]");
            return items.Select(e => DataSource.Parse(e.GetString()!)).Select(s => s with { Path = Abs(s.Path) }).ToArray();
        }
        var data = Sources("data");
        if (data.Count == 0) throw f.Error("data", "missing or empty", "give the job's training data: \"data\": [\"[TASK:]FILE\"]");
        var d = new TrainOptions { Artifacts = "", Data = data, Out = "" };
        var o = new TrainOptions
        {
            Artifacts = "", Data = data, Out = Abs(f.Str("out")),
            Lr = f.DoubleOpt("lr") ?? d.Lr, BatchSize = f.IntOpt("batch_size") ?? d.BatchSize, Steps = f.IntOpt("steps"), Epochs = f.DoubleOpt("epochs"),
            WeightDecay = f.DoubleOpt("weight_decay") ?? d.WeightDecay, LrScheduler = f.StrOpt("lr_scheduler") ?? d.LrScheduler,
            WarmupSteps = f.IntOpt("warmup_steps") ?? d.WarmupSteps, MaxGradNorm = f.DoubleOpt("max_grad_norm"), Seed = f.IntOpt("seed") ?? d.Seed,
            Shuffle = !f.Bool("no_shuffle", false), GroupByLength = f.Bool("group_by_length", false), Template = f.StrOpt("template") ?? d.Template,
            CutoffLen = f.IntOpt("cutoff_len"), TrainOnInputs = f.Bool("train_on_inputs", false), EvalData = Sources("eval_data"),
            EvalSteps = f.IntOpt("eval_steps") ?? 0, SaveSteps = f.IntOpt("save_steps") ?? 0, Packing = f.Bool("packing", false),
            Tokenizer = f.StrOpt("tokenizer") is { } t ? Abs(t) : null, SaveBin = f.Bool("save_bin", false),
        };
        if (o.Template is not ("alpaca" or "plain")) throw f.Error("template", $"'{o.Template}' is not a template", "use alpaca or plain");
        try
        {
            o.Validate();
        }
        catch (UserError e)
        {
            throw Fail.InFile(f.File, $"job '{name}'", e.Message.Replace("--", "", StringComparison.Ordinal), "fix the job's key (flags are snake_case keys here)");
        }
        return new JobSpec(name, Abs(f.Str("adapter")), o);
    }
}
