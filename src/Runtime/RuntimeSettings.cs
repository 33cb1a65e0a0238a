using Microsoft.ML.OnnxRuntime;

namespace MixLoRA.Runtime;

/// <summary>
/// The diagnosis settings from the MIXLORA_* environment variables, read once at start-up
/// (<see cref="FromEnvironment"/>, called by the CLI's Program.Main) and passed explicitly to the commands and
/// the runtimes they create (<see cref="OrtRuntime.For(Device, RuntimeSettings)"/>); nothing reads them from static state.
/// Tests construct one directly (<see cref="Default"/>: no variable set).
/// </summary>
public sealed record RuntimeSettings
{
    /// <summary>MIXLORA_ORT_OPT=disable|basic|extended: ORT's graph optimization level (default: all).</summary>
    public GraphOptimizationLevel OptimizationLevel { get; init; } = GraphOptimizationLevel.ORT_ENABLE_ALL;

    /// <summary>MIXLORA_ORT_LOG=0..4 (verbose..fatal), e.g. 0 prints node placement (default: error).</summary>
    public OrtLoggingLevel LogLevel { get; init; } = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR;

    /// <summary>MIXLORA_ORT_THREADS=N: ORT's intra-op threads (null: ORT's default).</summary>
    public int? IntraOpThreads { get; init; }

    /// <summary>
    /// MIXLORA_STRICT_PLACEMENT=1: session creation fails when any node is assigned to the CPU. Off by
    /// default: ORT 1.29 placed small int64 shape computations on the CPU and rejected every graph so; 1.32
    /// accepts the bench's grad step and optimizer graphs (docs/ort-cuda.md), other graphs are unchecked.
    /// </summary>
    public bool StrictPlacement { get; init; }

    /// <summary>MIXLORA_CUDA_OPTIONS="k=v;k=v" replaces the CUDA provider options (null: the trainer's own).</summary>
    public IReadOnlyDictionary<string, string>? CudaOptions { get; init; }

    /// <summary>MIXLORA_MEM_PATTERN=1: CUDA sessions use ORT's memory patterns (off by default, see OrtRuntime.Options).</summary>
    public bool MemoryPattern { get; init; }

    /// <summary>
    /// The GPU this process computes on (cuda:N, the CUDA provider's device_id): a data-parallel rank's LOCAL_RANK, else 0.
    /// Not an environment variable of its own: the trainer sets it from <see cref="Collectives.DistributedSettings"/>.
    /// </summary>
    public int CudaDevice { get; init; }

    /// <summary>MIXLORA_DEBUG=1: ONNX Runtime failures print their stack trace instead of one line.</summary>
    public bool Debug { get; init; }

    /// <summary>MIXLORA_BISECT_SKIP=Op,Op: op types `mixlora-doctor`'s node bisection leaves out.</summary>
    public IReadOnlySet<string> BisectSkip { get; init; } = new HashSet<string>();

    /// <summary>No variables set.</summary>
    public static RuntimeSettings Default { get; } = new();

    /// <summary>The settings from the MIXLORA_* variables of <paramref name="get"/> (default: the process environment): the one place they are read.</summary>
    public static RuntimeSettings FromEnvironment(Func<string, string?>? get = null)
    {
        get ??= Environment.GetEnvironmentVariable;
        var cuda = get("MIXLORA_CUDA_OPTIONS");
        return new RuntimeSettings
        {
            OptimizationLevel = get("MIXLORA_ORT_OPT") switch
            {
                "disable" => GraphOptimizationLevel.ORT_DISABLE_ALL,
                "basic" => GraphOptimizationLevel.ORT_ENABLE_BASIC,
                "extended" => GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                _ => GraphOptimizationLevel.ORT_ENABLE_ALL,
            },
            LogLevel = int.TryParse(get("MIXLORA_ORT_LOG"), out var level) ? (OrtLoggingLevel)level : OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
            IntraOpThreads = int.TryParse(get("MIXLORA_ORT_THREADS"), out var threads) ? threads : null,
            StrictPlacement = get("MIXLORA_STRICT_PLACEMENT") == "1",
            CudaOptions = cuda?.Split(';', StringSplitOptions.RemoveEmptyEntries).Select(kv => kv.Split('=', 2)).ToDictionary(p => p[0], p => p[1]),
            MemoryPattern = get("MIXLORA_MEM_PATTERN") == "1",
            Debug = get("MIXLORA_DEBUG") == "1",
            BisectSkip = (get("MIXLORA_BISECT_SKIP") ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries).ToHashSet(),
        };
    }
}
