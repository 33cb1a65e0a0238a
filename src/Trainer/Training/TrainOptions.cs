using MixLoRA.Trainer.Data;
using MixLoRA.Trainer.Runtime;

namespace MixLoRA.Trainer.Training;

/// <summary>Everything `mixlora-train` takes besides the artifacts; defaults are what a user expects.</summary>
public sealed record TrainOptions
{
    public required string Artifacts { get; init; }
    public required IReadOnlyList<DataSource> Data { get; init; }
    public required string Out { get; init; }
    public int BatchSize { get; init; } = 8;
    public int? MicroBatchSize { get; init; }
    public int? Steps { get; init; }
    public double? Epochs { get; init; }
    public double Lr { get; init; } = 2e-4;
    public double WeightDecay { get; init; }
    public string LrScheduler { get; init; } = "constant";
    public int WarmupSteps { get; init; }
    public double? MaxGradNorm { get; init; }
    public bool Shuffle { get; init; } = true;
    public bool GroupByLength { get; init; }
    public int Seed { get; init; } = 42;
    public Device Device { get; init; } = Device.Cpu;
    public int SaveSteps { get; init; }
    public int LogSteps { get; init; } = 1;
    public bool Resume { get; init; }
    public string? Tokenizer { get; init; }
    public int? CutoffLen { get; init; }
    public bool TrainOnInputs { get; init; }
    public string Template { get; init; } = "alpaca";
    public IReadOnlyList<DataSource> EvalData { get; init; } = [];
    public int EvalSteps { get; init; }
    /// <summary>Stop after this many optimizer steps of this run (tests of interrupted training).</summary>
    public int? StopAfter { get; init; }
    public bool Quiet { get; init; }
}
