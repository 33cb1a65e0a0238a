using System.Reflection;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Cli.Bench;

/// <summary>
/// One bench measurement; <see cref="ToJson"/> is the single line `mixlora-bench` prints: this record serialized,
/// keys in snake_case, in the order of its properties (<see cref="Parameters"/> enters as its four counts,
/// rounded values per <see cref="JsonRoundAttribute"/>).
/// </summary>
public sealed record BenchResult
{
    public required string Config { get; init; }
    public required string Method { get; init; }
    public required string Device { get; init; }
    [JsonPropertyName("dtype")]
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

    /// <summary>Whether the grad step replayed as a CUDA graph (--cuda-graph).</summary>
    public bool CudaGraph { get; init; }
    public required int WarmupSteps { get; init; }
    public required int Steps { get; init; }
    public required long TokensPerStep { get; init; }
    [JsonRound(1)]
    public required double TokensPerS { get; init; }
    [JsonRound(3)]
    public required double MsPerStepMedian { get; init; }
    [JsonRound(3)]
    public required double MsPerStepMean { get; init; }
    [JsonRound(3)]
    public required double MsPerStepMin { get; init; }
    public required long PeakMemoryBytes { get; init; }
    [JsonRound(3)]
    public double PeakMemoryGib => PeakMemoryBytes / (double)(1L << 30);
    public required string PeakMemorySource { get; init; }
    public required long DeviceStateBytes { get; init; }
    [JsonIgnore]
    public required ParameterCount Parameters { get; init; }
    public long TrainableParams => Parameters.Trainable;
    public long TrainableParamsActive => Parameters.TrainableActive;
    public long FrozenParams => Parameters.Frozen;
    public long FrozenMatmulParams => Parameters.FrozenMatmul;
    public required double FlopsPerToken { get; init; }
#pragma warning disable CA1822 // a JSON field: serialized as a property of the record
    public string FlopFormula => FlopModel.Formula;
#pragma warning restore CA1822
    [JsonRound(4)]
    public required double AchievedTflops { get; init; }
    public double? PeakTflops { get; init; }
    [JsonRound(4)]
    public double? Mfu { get; init; }
    [JsonRound(2)]
    public required double SetupS { get; init; }

    /// <summary>The loss of the last measured step (null in the JSON when not finite).</summary>
    [JsonRound(5)]
    public required double LastLoss { get; init; }

    /// <summary>The --lengths distribution of the real-length steps (null: full rows only).</summary>
    public string? Lengths { get; init; }
    [JsonRound(1)]
    public double? PaddedRealTokensPerS { get; init; }
    [JsonRound(4)]
    public double? PaddedPaddingFraction { get; init; }
    [JsonRound(1)]
    public double? PackedRealTokensPerS { get; init; }
    [JsonRound(4)]
    public double? PackedPaddingFraction { get; init; }

    /// <summary>--jobs: adapters trained at once (batch then counts every job's rows; tokens/s is the aggregate); null for one.</summary>
    public int? Jobs { get; init; }
    [JsonRound(1)]
    public double? PerJobTokensPerS { get; init; }

    /// <summary>--nproc N: ranks of a data-parallel step (batch then counts every rank's rows; tokens/s is the group's); null for one process.</summary>
    public int? WorldSize { get; init; }

    /// <summary>--nproc: tokens/s of one rank stepping alone (all ranks at once, averaged).</summary>
    [JsonRound(1)]
    public double? SoloTokensPerS { get; init; }

    /// <summary>--nproc: tokens_per_s / (world_size · solo_tokens_per_s).</summary>
    [JsonRound(4)]
    public double? ScalingEfficiency { get; init; }

    /// <summary>The serializer options of <see cref="ToJson"/>: snake_case keys, rounding, one line.</summary>
    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = false,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        TypeInfoResolver = new DefaultJsonTypeInfoResolver { Modifiers = { JsonRoundAttribute.Apply } },
    };

    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);
}

/// <summary>
/// A double (or double?) property written rounded to <see cref="Digits"/> decimals, and as null when not finite.
/// </summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class JsonRoundAttribute(int digits) : Attribute
{
    public int Digits { get; } = digits;

    /// <summary>
    /// A contract modifier: each property carrying this attribute is replaced, in place, by a double? property of
    /// the same name whose getter rounds (null when not finite). `required` is dropped: the JSON is only written
    /// (System.Text.Json refuses a required property that is [JsonIgnore]d).
    /// </summary>
    public static void Apply(JsonTypeInfo info)
    {
        for (var i = 0; i < info.Properties.Count; i++)
        {
            var p = info.Properties[i];
            p.IsRequired = false;                                                                   // written, never read back
            if (p.AttributeProvider?.GetCustomAttributes(typeof(JsonRoundAttribute), false).FirstOrDefault() is not JsonRoundAttribute round || p.Get is not { } get) continue;
            if (p.PropertyType != typeof(double) && p.PropertyType != typeof(double?))
                throw Fail.Bug($"[JsonRound] on {info.Type.Name}.{(p.AttributeProvider as MemberInfo)?.Name}, a {p.PropertyType.Name}: only double properties are rounded");
            var digits = round.Digits;
            var rounded = info.CreateJsonPropertyInfo(typeof(double?), p.Name);
            rounded.Get = o => get(o) is double d && double.IsFinite(d) ? Math.Round(d, digits) : null;
            rounded.AttributeProvider = p.AttributeProvider;
            info.Properties[i] = rounded;
        }
    }
}
