using System.Text.Json;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Data;

namespace MixLoRA.Trainer.Training;

/// <summary>What a checkpoint holds besides tensors: the step reached and where the data stream is.</summary>
public sealed record CheckpointInfo(long Step, string DataPosition, int Seed, string Schedule, double Lr, int WarmupSteps, long TotalSteps);

/// <summary>
/// `OUT/checkpoints/step-N/`: `adapter/` (reference format), `optimizer.safetensors` (AdamW moments as
/// `KEY.m`, `KEY.v`) and `state.json`. Written to `step-N.tmp/` and renamed, so a crash never leaves a
/// checkpoint that resume would take.
/// </summary>
public static class Checkpoints
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    public static string Save(string outDir, CheckpointInfo info, AdapterConfig cfg, AdapterWeights parameters, AdapterWeights m, AdapterWeights v)
    {
        var root = Path.Combine(outDir, "checkpoints");
        var final = Path.Combine(root, $"step-{info.Step}");
        var tmp = final + ".tmp";
        try
        {
            Remove(tmp);
            Directory.CreateDirectory(tmp);
            AdapterStore.Save(Path.Combine(tmp, "adapter"), cfg, parameters);
            var moments = m.Keys.Select(k => ($"{k}.m", m[k].Shape, m[k].Data)).Concat(v.Keys.Select(k => ($"{k}.v", v[k].Shape, v[k].Data)));
            SafetensorsWriter.WriteFloats(Path.Combine(tmp, "optimizer.safetensors"), moments);
            AtomicFile.WriteAllText(Path.Combine(tmp, "state.json"), JsonSerializer.Serialize(info, Indented));
            if (Directory.Exists(final)) Directory.Delete(final, true);
            Directory.Move(tmp, final);
            return final;
        }
        catch (Exception e)
        {
            // disk full (or any failure) half-way: no step-N.tmp is left behind, and step-N appears only when complete
            Remove(tmp);
            if (Fail.WriteFault(e) is { } io) throw Fail.Write(final, io);
            throw;
        }
    }

    /// <summary>Deletes a folder (or a file in its way), quietly when that fails too: the write's own error is the one reported.</summary>
    private static void Remove(string path)
    {
        try
        {
            if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
            else if (File.Exists(path)) File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // left for the next save, which removes it first (resume never takes a .tmp)
        }
    }

    /// <summary>The newest complete checkpoint under OUT (of step <paramref name="atMost"/> or earlier when given), or null.</summary>
    public static string? Latest(string outDir, long atMost = long.MaxValue) => All(outDir, atMost) is [.., var last] ? last : null;

    /// <summary>The complete checkpoints of a run folder, oldest first (optionally up to step <paramref name="atMost"/>).</summary>
    public static IReadOnlyList<string> All(string outDir, long atMost = long.MaxValue)
    {
        var root = Path.Combine(outDir, "checkpoints");
        if (!Directory.Exists(root)) return [];
        return [.. Directory.GetDirectories(root, "step-*")
            .Where(d => !d.EndsWith(".tmp", StringComparison.Ordinal) && File.Exists(Path.Combine(d, "state.json")))
            .Select(d => (d, n: long.TryParse(Path.GetFileName(d)["step-".Length..], out var n) ? n : -1))
            .Where(p => p.n >= 0 && p.n <= atMost).OrderBy(p => p.n).Select(p => p.d)];
    }

    public static (CheckpointInfo Info, AdapterWeights Params, AdapterWeights M, AdapterWeights V) Load(string dir)
    {
        var statePath = Path.Combine(dir, "state.json");
        CheckpointInfo info;
        try
        {
            info = JsonSerializer.Deserialize<CheckpointInfo>(File.ReadAllText(statePath)) ?? throw Fail.Json("the state is null");
        }
        catch (JsonException e)
        {
            throw Fail.InFile(statePath, $"line {(e.LineNumber ?? 0) + 1}", "not a valid checkpoint state", "delete this checkpoint folder to resume from an earlier one");
        }
        var parameters = AdapterWeights.Load(Path.Combine(dir, "adapter"));
        var (m, v) = (new AdapterWeights(), new AdapterWeights());
        using var f = new SafetensorsFile(Path.Combine(dir, "optimizer.safetensors"));
        foreach (var k in parameters.Keys)
        {
            m.Set(k, parameters[k].Shape, f.ReadFloat32($"{k}.m"));
            v.Set(k, parameters[k].Shape, f.ReadFloat32($"{k}.v"));
        }
        return (info, parameters, m, v);
    }

    public static DataPosition Position(CheckpointInfo info) => DataPosition.FromJson(info.DataPosition, "checkpoint state.json");
}
