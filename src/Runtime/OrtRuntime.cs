using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Runtime;

public enum Device { Cpu, Cuda }

/// <summary>
/// Owns ONNX Runtime session creation: CPU, or CUDA through the package's own
/// <c>SessionOptions.AppendExecutionProvider_CUDA</c> (NuGet Microsoft.ML.OnnxRuntime.Gpu.Linux carries the
/// provider beside libonnxruntime.so). One instance per process device choice.
/// </summary>
public sealed class OrtRuntime
{
    private static readonly Lock Gate = new();

    /// <summary>
    /// ORT's usage telemetry off: the official 1.32 build on Linux queues events with a device id under
    /// ~/.cache/Microsoft/DeveloperTools/.onnxruntime. DisableTelemetryEvents stops events after the environment
    /// exists; the opt-out variables, set natively before it is created, stop the process event and the files.
    /// </summary>
    private static readonly OrtEnv Env = Quiet();

    private static OrtEnv Quiet()
    {
        foreach (var name in new[] { "ORT_DISABLE_TELEMETRY", "ORT_TELEMETRY_DISABLED" }) _ = SetEnv(name, "1", 0);   // the process's own value wins
        var env = OrtEnv.Instance();
        env.DisableTelemetryEvents();
        return env;
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "setenv")]
    private static extern int SetEnv(string name, string value, int overwrite);
    private static CudaSetup? _cuda;

    private OrtRuntime(Device device, RuntimeSettings settings)
    {
        _ = Env;                                                                            // ORT's environment exists (telemetry off) before any session or tensor
        (Device, Settings) = (device, settings);
    }

    public Device Device { get; }

    /// <summary>The diagnosis settings its sessions are created with (MIXLORA_* variables, read once at start-up).</summary>
    public RuntimeSettings Settings { get; }

    /// <summary>When set, every session this runtime creates writes an ORT profile (PREFIX_*.json) when disposed.</summary>
    public string? ProfilePrefix { get; private init; }

    /// <summary>This runtime with ORT profiling of every session it creates (for mixlora-bench --profile).</summary>
    public OrtRuntime WithProfiling(string prefix) => new(Device, Settings) { ProfilePrefix = prefix, CudaGraphs = CudaGraphs };

    /// <summary>
    /// The CPU runtime with <see cref="RuntimeSettings.Default"/> (no MIXLORA_* variable applies): for tests and
    /// library callers. The commands create theirs with the settings the CLI read at start-up.
    /// </summary>
    public static OrtRuntime Cpu { get; } = new(Device.Cpu, RuntimeSettings.Default);

    /// <summary>The runtime for <paramref name="device"/> with this runtime's settings (e.g. the CPU twin a device check compares with).</summary>
    public OrtRuntime On(Device device) => For(device, Settings);

    public static Device ParseDevice(string s) => s.ToLowerInvariant() switch
    {
        "cpu" => Device.Cpu,
        "cuda" or "gpu" => Device.Cuda,
        _ => throw Fail.User($"unknown device '{s}'", "use --device cpu or --device cuda"),
    };

    /// <summary>The runtime for <paramref name="device"/> with <paramref name="settings"/>.</summary>
    public static OrtRuntime For(Device device, RuntimeSettings settings)
    {
        if (device == Device.Cpu) return ReferenceEquals(settings, RuntimeSettings.Default) ? Cpu : new OrtRuntime(Device.Cpu, settings);
        var rt = new OrtRuntime(Device.Cuda, settings);
        rt.DeviceAllocator();                                                               // load the provider now: a missing GPU fails here
        return rt;
    }

    /// <summary>Memory info of the device this runtime computes on (the CUDA allocator's own, for CUDA).</summary>
    public OrtMemoryInfo DeviceMemory => Device == Device.Cpu ? OrtMemoryInfo.DefaultInstance : Cuda(Settings).Allocator.Info;

    /// <summary>
    /// The allocator for device-resident tensors (weights, trainer state): the CPU default, or on CUDA the arena
    /// of one small process-wide session that exists only to own it (each compute session keeps its own arena).
    /// </summary>
    public OrtAllocator DeviceAllocator() => Device == Device.Cpu ? OrtAllocator.DefaultInstance : Cuda(Settings).Allocator;

    /// <summary>The CUDA provider library this process loads (beside libonnxruntime.so, as the NuGet package lays it out).</summary>
    public static string CudaProviderPath => Path.Combine(Path.GetDirectoryName(OrtLibrary.Path) ?? ".", "libonnxruntime_providers_cuda.so");

    private sealed record CudaSetup(InferenceSession Session, OrtAllocator Allocator);

    /// <summary>
    /// Loads the CUDA provider once. Its library is also registered with the environment: host↔device copies
    /// outside a session run (<c>OrtEnv.CopyTensors</c>) use the data transfer that registration provides; without it
    /// ORT 1.32 answers "Data transfer implementation between source and destination device was not found".
    /// </summary>
    private static CudaSetup Cuda(RuntimeSettings settings)
    {
        lock (Gate)
        {
            if (_cuda != null) return _cuda;
            Fail.If(!File.Exists(CudaProviderPath), $"{CudaProviderPath} is missing: this build carries the CPU ONNX Runtime",
                "build the CUDA flavour (tools/setup.sh cuda, or dotnet build/publish -p:MixLoraOrt=cuda), or use --device cpu");
            var env = Env;
            try
            {
                env.RegisterExecutionProviderLibrary("cuda", CudaProviderPath);
                if (!env.GetEpDevices().Any(d => d.EpName == "CUDAExecutionProvider"))
                {
                    throw Fail.User("the CUDA provider loaded but found no GPU", "run on a machine with an NVIDIA GPU, or use --device cpu");
                }
                using var o = new OrtRuntime(Device.Cuda, settings).Options();
                var session = new InferenceSession(AllocatorGraph.Value, o);
                using var info = new OrtMemoryInfo(OrtMemoryInfo.allocatorCUDA, OrtAllocatorType.DeviceAllocator, settings.CudaDevice, OrtMemType.Default);
                return _cuda = new CudaSetup(session, new OrtAllocator(session, info));
            }
            catch (OnnxRuntimeException e)
            {
                throw Fail.User($"could not start the CUDA provider {CudaProviderPath} ({e.Message})",
                    "check that the CUDA 13 and cuDNN 9 libraries are on LD_LIBRARY_PATH and a GPU driver is present, or use --device cpu");
            }
        }
    }

    /// <summary>An Identity graph over one float: the smallest session that owns a CUDA arena.</summary>
    private static readonly Lazy<byte[]> AllocatorGraph = new(() =>
    {
        var b = new GraphBuilder.Building.Builder("cuda_allocator");
        b.Output(b.Input("x", GraphBuilder.IR.DType.Float32, 1), "y");
        return GraphBuilder.Onnx.OnnxWriter.ToBytes(b.Build());
    });

    /// <summary>
    /// Whether ORT captures the CUDA grad step as a CUDA graph and replays it (`--cuda-graph`, the provider's
    /// `enable_cuda_graph`; on ORT 1.29 that capture failed and we captured through the driver API instead,
    /// docs/ort-cuda.md). See <see cref="CheckCudaGraphs"/>.
    /// </summary>
    public bool CudaGraphs { get; private init; }

    /// <summary>This runtime with the grad step replayed as a CUDA graph.</summary>
    public OrtRuntime WithCudaGraphs() => new(Device, Settings) { ProfilePrefix = ProfilePrefix, CudaGraphs = true };

    /// <summary>
    /// A replayed graph reuses the kernel arguments of the captured run, and ORT's Dropout draws its seed on
    /// the host at launch: its masks would repeat every step. Graphs are allowed where no such node runs.
    /// </summary>
    public static void CheckCudaGraphs(Device device, double loraDropout)
    {
        Fail.If(device != Device.Cuda, "--cuda-graph on the CPU", "CUDA graphs replay GPU work: use --device cuda, or drop --cuda-graph");
        Fail.If(loraDropout > 0, $"--cuda-graph with lora_dropout {loraDropout}",
            "ONNX Runtime's Dropout would replay one mask every step: use lora_dropout 0 with --cuda-graph, or drop --cuda-graph");
    }

    /// <summary>
    /// The CUDA provider options: <see cref="RuntimeSettings.CudaOptions"/> when set (for diagnosis), else the trainer's;
    /// device_id is <see cref="RuntimeSettings.CudaDevice"/> unless the set options name one.
    /// </summary>
    private Dictionary<string, string> ProviderOptions()
    {
        // grow the arena by what is requested, not by powers of two; no TF32 (float32 graphs must compute
        // in float32: parity runs on the GPU drifted by 4e-4 with TF32 matmuls)
        var o = Settings.CudaOptions is { } set ? new Dictionary<string, string>(set) : new() { ["arena_extend_strategy"] = "kSameAsRequested", ["use_tf32"] = "0" };
        o.TryAdd("device_id", Settings.CudaDevice.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return o;
    }

    /// <summary>Session options with this runtime's provider; the caller may adjust them before use.</summary>
    /// <param name="strict">fail session creation when a node would fall back to the CPU (CUDA only; default <see cref="RuntimeSettings.StrictPlacement"/>).</param>
    /// <param name="cudaGraph">ORT captures the session's run as a CUDA graph and replays it (`enable_cuda_graph`).</param>
    public SessionOptions Options(bool profile = false, bool? strict = null, bool cudaGraph = false)
    {
        var o = new SessionOptions
        {
            GraphOptimizationLevel = Settings.OptimizationLevel,
            LogSeverityLevel = Settings.LogLevel,
        };
        if (Settings.IntraOpThreads is { } threads) o.IntraOpNumThreads = threads;
        Kernels.CustomOps.AddTo(o);                                                         // com.mixlora kernels (fused MixLoRA experts)
        if (ProfilePrefix != null) o.ProfileOutputPathPrefix = ProfilePrefix;
        if (profile || ProfilePrefix != null) o.EnableProfiling = true;
        if (Device == Device.Cuda)
        {
            var provider = ProviderOptions();
            if (cudaGraph) provider["enable_cuda_graph"] = "1";
            using var cuda = new OrtCUDAProviderOptions();
            cuda.UpdateOptions(provider);
            o.AppendExecutionProvider_CUDA(cuda);
            if (strict ?? Settings.StrictPlacement) o.AddSessionConfigEntry("session.disable_cpu_ep_fallback", "1");
            // each session allocates from its own arena, dynamically (no memory pattern). Measured on the H100
            // on ORT 1.29 (docs/performance.md): the environment's shared arena made steps 19-35% longer (7B
            // MixLoRA 255 vs 214 ms), and memory patterns kept the first run's allocations beside the pattern
            // block (TinyLlama MixLoRA 34-36 GiB against 20-21); MIXLORA_MEM_PATTERN=1 brings patterns back
            o.EnableMemoryPattern = Settings.MemoryPattern;
        }
        return o;
    }

    public InferenceSession Session(byte[] model, SessionOptions? options = null)
    {
        using var own = options == null ? Options() : null;
        try
        {
            return Create(() => new InferenceSession(model, options ?? own!));
        }
        catch (OnnxRuntimeException e)
        {
            throw Fail.Runtime($"ONNX Runtime rejected the graph on {Device}: {e.Message.ReplaceLineEndings(" ")}",
                $"check the device with mixlora-doctor --device {Device.ToString().ToLowerInvariant()} --smoke; MIXLORA_DEBUG=1 prints the stack trace", e);
        }
    }

    private static readonly Lock FirstSession = new();
    private static volatile bool _domainKnown;

    /// <summary>
    /// Creates a session whose options carry the com.mixlora domain. ORT adds a custom domain to its
    /// process-wide version map when the first such session is created, without a lock: two first sessions
    /// created at once fail ("domain is already exist"), so sessions are created one at a time until one has.
    /// </summary>
    public static InferenceSession Create(Func<InferenceSession> create)
    {
        if (_domainKnown) return create();
        lock (FirstSession)
        {
            var session = create();
            _domainKnown = true;
            return session;
        }
    }
}
