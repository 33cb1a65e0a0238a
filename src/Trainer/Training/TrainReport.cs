using System.Globalization;
using System.Text;

namespace MixLoRA.Trainer.Training;

/// <summary>The summary `mixlora-train` prints at the end: steps, time, loss, tokens/s, outputs, router load.</summary>
public static class TrainReport
{
    public static void Write(TextWriter log, TrainSummary s) => log.Write(Format(s));

    public static string Format(TrainSummary s)
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        var status = s.FinalStep >= s.TotalSteps ? "done" : $"stopped at step {s.FinalStep} of {s.TotalSteps}";
        sb.AppendLine(s.Steps == 0
            ? $"{status}: no steps left to run (the checkpoint is at step {s.FinalStep})"
            : string.Create(inv, $"{status}: {s.Steps} steps in {s.Seconds:F1}s, loss {s.FirstLoss:F4} → {s.LastLoss:F4}, {s.TokensPerSecond:F0} tokens/s"));
        sb.AppendLine(inv, $"  adapter:    {s.AdapterDir ?? "(not written: the run stopped before its last step; continue with --resume)"}");
        sb.AppendLine(inv, $"  checkpoint: {s.LastCheckpoint}");
        sb.AppendLine(inv, $"  metrics:    {s.MetricsPath}");
        if (s.RouterLoad is { } load) sb.Append(RouterTable(load));
        return sb.ToString();
    }

    /// <summary>Fraction of tokens routed to each expert per layer, one row per layer.</summary>
    public static string RouterTable(double[,] load)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder("  router load of the last step (fraction of tokens per expert):\n");
        sb.Append("    layer");
        for (var e = 0; e < load.GetLength(1); e++) sb.Append(inv, $"  {"e" + e,6}");
        sb.AppendLine();
        for (var l = 0; l < load.GetLength(0); l++)
        {
            sb.Append(inv, $"    {l,5}");
            for (var e = 0; e < load.GetLength(1); e++) sb.Append(inv, $"  {load[l, e],6:F3}");
            sb.AppendLine();
        }
        return sb.ToString();
    }
}
