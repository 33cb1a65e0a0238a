using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Cli.Bench;

/// <summary>What `mixlora-bench` measures; null sizes take the preset's (see <see cref="BenchModels"/>).</summary>
public sealed record BenchOptions
{
    public string Config { get; init; } = "tiny";
    public AdapterChoice Adapter { get; init; } = new("mixlora");
    public int? SeqLen { get; init; }
    public int? Batch { get; init; }

    /// <summary>Weight and compute dtype; null: float32 on the CPU, bfloat16 on CUDA.</summary>
    public DType? DType { get; init; }
    public Device Device { get; init; } = Device.Cpu;

    /// <summary>The MIXLORA_* settings the CLI read at start-up, for the bench's sessions.</summary>
    public RuntimeSettings Runtime { get; init; } = RuntimeSettings.Default;
    public bool GradientCheckpointing { get; init; }

    /// <summary>The fused ops wanted (<see cref="FusedOps.None"/> with --no-fused-kernels); the graphs use those the device has.</summary>
    public FusedOps Fused { get; init; } = FusedOps.All;
    /// <summary>Replay the grad step as a CUDA graph (see <see cref="OrtRuntime.CheckCudaGraphs"/>).</summary>
    public bool CudaGraph { get; init; }
    /// <summary>Elements per AdamW run (<see cref="ChunkedOptimizer"/>).</summary>
    public long OptimizerChunk { get; init; } = ChunkedOptimizer.DefaultChunk;
    public int Steps { get; init; } = 10;
    public int Warmup { get; init; } = 3;

    /// <summary>Peak dense TFLOP/s of the device for MFU; null: 989 (H100 SXM bf16/fp16) on CUDA in half precision, else no MFU.</summary>
    public double? PeakTflops { get; init; }

    /// <summary>When set, ORT profiles every session run into PREFIX_*.json and the top nodes go to the log.</summary>
    public string? Profile { get; init; }
    public int Seed { get; init; } = 42;

    /// <summary>--lengths: also time real-length steps, padded and packed (<see cref="LengthBench"/>); null: full rows only.</summary>
    public LengthDistribution? Lengths { get; init; }
}
