using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace MixLoRA.Trainer.Training;

/// <summary>
/// `OUT/metrics.jsonl`, one line per optimizer step (step counted from 0), plus the progress display:
/// a self-updating line on a terminal, plain lines when output is redirected.
/// </summary>
public sealed class Metrics : IDisposable
{
    private readonly StreamWriter _file;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly long _firstStep, _total;
    private readonly bool _tty, _quiet;
    private long _tokens;

    public Metrics(string outDir, long firstStep, long totalSteps, bool quiet)
    {
        var path = System.IO.Path.Combine(outDir, "metrics.jsonl");
        Path = path;
        try
        {
            KeepLinesBefore(path, firstStep);
            _file = new StreamWriter(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw MixLoRA.GraphBuilder.Fail.Write(path, e);
        }
        (_firstStep, _total, _quiet) = (firstStep, totalSteps, quiet);
        _tty = !Console.IsOutputRedirected;
    }

    /// <summary>The metrics.jsonl file.</summary>
    public string Path { get; }

    public void Step(long step, StepResult r, double lr, double stepSeconds)
    {
        _tokens += r.Tokens;
        var line = new Dictionary<string, object?>
        {
            ["step"] = step, ["lm_loss"] = r.LmLoss, ["aux_loss"] = r.AuxLoss, ["loss"] = r.Loss, ["lr"] = lr,
            ["grad_norm"] = r.GradNorm, ["tokens"] = r.Tokens, ["tokens_per_s"] = r.Tokens / Math.Max(stepSeconds, 1e-9),
        };
        if (r.RouterLoad is { } load)
        {
            line["router_load"] = Enumerable.Range(0, load.GetLength(0)).Select(l => Enumerable.Range(0, load.GetLength(1)).Select(e => Math.Round(load[l, e], 4)).ToArray()).ToArray();
        }
        Append(JsonSerializer.Serialize(line));
        if (!_quiet) Progress(step, r);
    }

    public void Eval(long step, double loss, double lmLoss)
    {
        Append(JsonSerializer.Serialize(new Dictionary<string, object> { ["step"] = step, ["eval_loss"] = loss, ["eval_lm_loss"] = lmLoss }));
        if (!_quiet) Console.WriteLine($"{(_tty ? "\n" : "")}eval at step {step}: loss {loss:F4} (lm {lmLoss:F4})");
    }

    /// <summary>One line, flushed; a refused write (disk full) names metrics.jsonl.</summary>
    private void Append(string line)
    {
        try
        {
            _file.WriteLine(line);
            _file.Flush();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw MixLoRA.GraphBuilder.Fail.Write(Path, e);
        }
    }

    private void Progress(long step, StepResult r)
    {
        var done = step + 1 - _firstStep;
        var elapsed = _clock.Elapsed.TotalSeconds;
        var eta = TimeSpan.FromSeconds(elapsed / Math.Max(done, 1) * (_total - step - 1));
        var tps = _tokens / Math.Max(elapsed, 1e-9);
        var width = 24;
        var filled = (int)(width * (step + 1) / Math.Max(_total, 1));
        var bar = new string('█', filled) + new string('·', width - filled);
        var text = string.Create(CultureInfo.InvariantCulture,
            $"{bar} step {step + 1}/{_total}  loss {r.Loss:F4}  aux {r.AuxLoss:F4}  {tps:F0} tok/s  ETA {eta:hh\\:mm\\:ss}");
        if (_tty) Console.Write("\r" + text);
        else Console.WriteLine(text);
    }

    public void Finish()
    {
        if (_tty && !_quiet) Console.WriteLine();
    }

    /// <summary>On resume, drop lines of steps that will be re-run (and a line cut short by a crash).</summary>
    private static void KeepLinesBefore(string path, long step)
    {
        if (!File.Exists(path)) return;
        var keep = File.ReadAllLines(path).Where(l => StepOf(l) is { } s && s < step).ToArray();
        MixLoRA.GraphBuilder.IO.AtomicFile.WriteAllText(path, keep.Length == 0 ? "" : string.Join("\n", keep) + "\n");
    }

    private static long? StepOf(string line)
    {
        try
        {
            using var d = JsonDocument.Parse(line);
            return d.RootElement.TryGetProperty("step", out var s) && s.TryGetInt64(out var n) ? n : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    public void Dispose() => _file.Dispose();
}
