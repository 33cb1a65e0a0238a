namespace MixLoRA.GraphBuilder.Optim;

/// <summary>The learning-rate curves of HF transformers' schedulers.</summary>
public enum LrScheduleKind
{
    /// <summary>get_constant_schedule_with_warmup (get_constant_schedule when warmup is 0).</summary>
    Constant,
    /// <summary>get_linear_schedule_with_warmup.</summary>
    Linear,
    /// <summary>get_cosine_schedule_with_warmup with num_cycles 0.5.</summary>
    Cosine,
}

/// <summary>
/// Host-side learning rate per optimizer step, as HF's LambdaLR schedules: the k-th optimizer step
/// (0-based; the scheduler steps after the optimizer) uses <c>PeakLr · factor(k)</c> with
/// <code>
///   k &lt; warmup:  factor = k / max(1, warmup)
///   constant:     1
///   linear:       max(0, (total − k) / max(1, total − warmup))
///   cosine:       p = (k − warmup) / max(1, total − warmup);  max(0, ½ (1 + cos(π p)))
/// </code>
/// </summary>
public sealed record LrSchedule(LrScheduleKind Kind, double PeakLr, long WarmupSteps = 0, long TotalSteps = 0)
{
    /// <summary>The learning rate for optimizer step <paramref name="step"/> (0-based).</summary>
    public double At(long step) => PeakLr * Factor(step);

    /// <summary>The multiplier of the peak learning rate at optimizer step <paramref name="step"/>.</summary>
    public double Factor(long step)
    {
        if (step < 0) throw Fail.Arg(nameof(step), step, "a 0-based optimizer step ≥ 0");
        if (step < WarmupSteps) return (double)step / Math.Max(1, WarmupSteps);
        var decaySteps = (double)Math.Max(1, TotalSteps - WarmupSteps);
        return Kind switch
        {
            LrScheduleKind.Constant => 1.0,
            LrScheduleKind.Linear => Math.Max(0.0, (TotalSteps - step) / decaySteps),
            LrScheduleKind.Cosine => Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * ((step - WarmupSteps) / decaySteps)))),
            _ => throw Fail.Arg(nameof(Kind), Kind, "a known schedule"),
        };
    }

    /// <summary>Rejects settings that make no schedule; <paramref name="where"/> names the config key or flag.</summary>
    public LrSchedule Validate(string where = "lr schedule")
    {
        Fail.If(!(PeakLr >= 0) || double.IsInfinity(PeakLr), $"{where}: learning rate {Fail.Show(PeakLr)} is not a finite value ≥ 0", "use a value such as 2e-4");
        Fail.If(WarmupSteps < 0, $"{where}: warmup steps {WarmupSteps} is negative", "use 0 or a positive number of optimizer steps");
        Fail.If(Kind != LrScheduleKind.Constant && TotalSteps <= 0, $"{where}: a {Name(Kind)} schedule needs the total number of optimizer steps, got {TotalSteps}",
            "give the total step count (epochs × steps per epoch), or use the constant schedule");
        return this;
    }

    /// <summary>Parses the HF names: constant, constant_with_warmup, linear, cosine.</summary>
    public static LrScheduleKind ParseKind(string s) => s.Trim().ToLowerInvariant() switch
    {
        "constant" or "constant_with_warmup" => LrScheduleKind.Constant,
        "linear" => LrScheduleKind.Linear,
        "cosine" => LrScheduleKind.Cosine,
        _ => throw Fail.User($"unknown lr schedule '{s}'", "use constant, constant_with_warmup, linear or cosine"),
    };

    public static string Name(LrScheduleKind k) => k switch
    {
        LrScheduleKind.Constant => "constant",
        LrScheduleKind.Linear => "linear",
        LrScheduleKind.Cosine => "cosine",
        _ => k.ToString(),
    };
}
