using MixLoRA.GraphBuilder;
using MixLoRA.Runtime;
using MixLoRA.Text.Data;

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

    /// <summary>--packing: pack each step's records first-fit into rows of the graphs' sequence length; the micro-batch size counts rows.</summary>
    public bool Packing { get; init; }
    public int Seed { get; init; } = 42;
    public Device Device { get; init; } = Device.Cpu;

    /// <summary>The MIXLORA_* settings the CLI read at start-up, for the sessions of this run.</summary>
    public RuntimeSettings Runtime { get; init; } = RuntimeSettings.Default;
    public int SaveSteps { get; init; }
    public int LogSteps { get; init; } = 1;
    public bool Resume { get; init; }

    /// <summary>--overwrite: a new run into a folder that holds one deletes the old run first.</summary>
    public bool Overwrite { get; init; }

    /// <summary>SIGINT/SIGTERM stop after the current step with a checkpoint (the CLI; in-process callers keep the default handlers).</summary>
    public bool HandleSignals { get; init; }
    public string? Tokenizer { get; init; }
    public int? CutoffLen { get; init; }
    public bool TrainOnInputs { get; init; }
    public string Template { get; init; } = "alpaca";
    public IReadOnlyList<DataSource> EvalData { get; init; } = [];
    public int EvalSteps { get; init; }
    /// <summary>Stop after this many optimizer steps of this run (tests of interrupted training).</summary>
    public int? StopAfter { get; init; }
    public bool Quiet { get; init; }

    /// <summary>Replay the first micro-step of each step as a CUDA graph (see <see cref="Runtime.OrtRuntime.CheckCudaGraphs"/>).</summary>
    public bool CudaGraph { get; init; }
    /// <summary>Also write `adapter_model.bin` (the reference's torch format) into OUT/adapter.</summary>
    public bool SaveBin { get; init; }

    /// <summary>
    /// This process's rank in a data-parallel group (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), or null
    /// to train alone (see <see cref="Distributed.DataParallel"/>).
    /// </summary>
    public Runtime.Collectives.RankInfo? Ranks { get; init; }

    /// <summary>How long the rendezvous waits for every rank (--rendezvous-timeout).</summary>
    public TimeSpan RendezvousTimeout { get; init; } = TimeSpan.FromSeconds(300);

    /// <summary>Rejects flag values that cannot work, naming the flag, the value and what to use.</summary>
    public void Validate()
    {
        Fail.If(Steps is < 1, $"--steps {Steps} must be positive", "use --steps 1 or more, or --epochs");
        Fail.If(Epochs is { } e && !(e > 0), $"--epochs {Epochs} must be positive", "use e.g. --epochs 1 or --epochs 0.5");
        Fail.If(BatchSize < 1, $"--batch-size {BatchSize} must be positive", "use --batch-size 1 or more");
        Fail.If(MicroBatchSize is < 1, $"--micro-batch-size {MicroBatchSize} must be positive", "use the artifacts' micro-batch size (or leave the flag out)");
        Fail.If(!(Lr > 0) || double.IsInfinity(Lr), $"--lr {Lr} must be a positive number", "use e.g. --lr 2e-4");
        // AdamW moves every weight by about lr per step whatever the gradient's size: above 1 the adapter explodes
        // (measured: --lr 1e6 trains to the end on exploded weights with the loss stuck at ln V)
        Fail.If(Lr > 1, $"--lr {Lr} would move every adapter weight by about {Lr:G3} per AdamW step", "fine-tuning uses 1e-5 to 1e-2, e.g. --lr 2e-4");
        Fail.If(!(WeightDecay >= 0), $"--weight-decay {WeightDecay} must be zero or positive", "use e.g. --weight-decay 0.01");
        Fail.If(WarmupSteps < 0, $"--warmup-steps {WarmupSteps} must be zero or positive", "use --warmup-steps 0 or more");
        Fail.If(MaxGradNorm is { } g && !(g > 0), $"--max-grad-norm {MaxGradNorm} must be positive", "use e.g. --max-grad-norm 1.0, or leave it out for no clipping");
        Fail.If(SaveSteps < 0, $"--save-steps {SaveSteps} must be zero or positive", "use 0 (only at the end) or a step count");
        Fail.If(EvalSteps < 0, $"--eval-steps {EvalSteps} must be zero or positive", "use 0 (only at the end) or a step count");
        Fail.If(EvalSteps > 0 && EvalData.Count == 0, $"--eval-steps {EvalSteps} without --eval-data", "pass --eval-data FILE too");
        Fail.If(Resume && Overwrite, "--resume and --overwrite together", "--resume continues the run in --out, --overwrite deletes it: choose one");
        Fail.If(!(RendezvousTimeout > TimeSpan.Zero), $"--rendezvous-timeout {RendezvousTimeout.TotalSeconds} must be positive", "use e.g. --rendezvous-timeout 300 (seconds)");
        Fail.If(StopAfter is < 1, $"StopAfter {StopAfter} must be positive", "use 1 or more");
    }
}
