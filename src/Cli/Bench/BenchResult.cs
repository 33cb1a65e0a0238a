using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace MixLoRA.Cli.Bench;

/// <summary>
/// One bench measurement; <see cref="ToJson"/> is the single line `mixlora-bench` prints (keys in snake_case,
/// in the order of this record).
/// </summary>
public sealed record BenchResult
{
    public required string Config { get; init; }
    public required string Method { get; init; }
    public required string Device { get; init; }
    public required string DType { get; init; }
    public required int SeqLen { get; init; }
    public required int Batch { get; init; }
    public required int R { get; init; }
    public required double LoraAlpha { get; init; }
    public int? Experts { get; init; }
    public int? TopK { get; init; }
    public required double Dropout { get; init; }
    public required string GradientCheckpointing { get; init; }

    /// <summary>The com.mixlora fused kernels the graphs used (<see cref="GraphBuilder.Ops.FusedOps"/> names; empty: none).</summary>
    public IReadOnlyList<string> FusedKernels { get; init; } = [];
    public required int WarmupSteps { get; init; }
    public required int Steps { get; init; }
    public required long TokensPerStep { get; init; }
    public required double TokensPerS { get; init; }
    public required double MsPerStepMedian { get; init; }
    public required double MsPerStepMean { get; init; }
    public required double MsPerStepMin { get; init; }
    public required long PeakMemoryBytes { get; init; }
    public required string PeakMemorySource { get; init; }
    public required long DeviceStateBytes { get; init; }
    public required ParameterCount Parameters { get; init; }
    public required double FlopsPerToken { get; init; }
    public required double AchievedTflops { get; init; }
    public double? PeakTflops { get; init; }
    public double? Mfu { get; init; }
    public required double SetupS { get; init; }
    public required double LastLoss { get; init; }

    /// <summary>Whether the grad step replayed as a CUDA graph (--cuda-graph).</summary>
    public bool CudaGraph { get; init; }

    public string ToJson()
    {
        var o = new JsonObject
        {
            ["config"] = Config,
            ["method"] = Method,
            ["device"] = Device,
            ["dtype"] = DType,
            ["seq_len"] = SeqLen,
            ["batch"] = Batch,
            ["r"] = R,
            ["lora_alpha"] = LoraAlpha,
            ["experts"] = Experts,
            ["top_k"] = TopK,
            ["dropout"] = Dropout,
            ["gradient_checkpointing"] = GradientCheckpointing,
            ["fused_kernels"] = new JsonArray(FusedKernels.Select(k => (JsonNode?)k).ToArray()),
            ["cuda_graph"] = CudaGraph,
            ["warmup_steps"] = WarmupSteps,
            ["steps"] = Steps,
            ["tokens_per_step"] = TokensPerStep,
            ["tokens_per_s"] = Math.Round(TokensPerS, 1),
            ["ms_per_step_median"] = Math.Round(MsPerStepMedian, 3),
            ["ms_per_step_mean"] = Math.Round(MsPerStepMean, 3),
            ["ms_per_step_min"] = Math.Round(MsPerStepMin, 3),
            ["peak_memory_bytes"] = PeakMemoryBytes,
            ["peak_memory_gib"] = Math.Round(PeakMemoryBytes / (double)(1L << 30), 3),
            ["peak_memory_source"] = PeakMemorySource,
            ["device_state_bytes"] = DeviceStateBytes,
            ["trainable_params"] = Parameters.Trainable,
            ["trainable_params_active"] = Parameters.TrainableActive,
            ["frozen_params"] = Parameters.Frozen,
            ["frozen_matmul_params"] = Parameters.FrozenMatmul,
            ["flops_per_token"] = FlopsPerToken,
            ["flop_formula"] = FlopModel.Formula,
            ["achieved_tflops"] = Math.Round(AchievedTflops, 4),
            ["peak_tflops"] = PeakTflops,
            ["mfu"] = Mfu is { } m ? Math.Round(m, 4) : null,
            ["setup_s"] = Math.Round(SetupS, 2),
            ["last_loss"] = double.IsFinite(LastLoss) ? Math.Round(LastLoss, 5) : null,
        };
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = false, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
    }
}
