using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Trainer.Runtime;

public enum Device { Cpu, Cuda }

/// <summary>
/// Owns ONNX Runtime session creation: CPU, or CUDA through RegisterExecutionProviderLibrary +
/// GetEpDevices + AppendExecutionProvider (DESIGN §2; AppendExecutionProvider_CUDA does not exist in
/// this native build). One instance per process device choice.
/// </summary>
public sealed class OrtRuntime
{
    private static readonly Lock Gate = new();
    private static OrtEpDevice[]? _cudaDevices;

    private OrtRuntime(Device device, OrtEpDevice[] epDevices)
    {
        Device = device;
        _epDevices = epDevices;
    }

    private readonly OrtEpDevice[] _epDevices;

    public Device Device { get; }

    /// <summary>When set, every session this runtime creates writes an ORT profile (PREFIX_*.json) when disposed.</summary>
    public string? ProfilePrefix { get; private init; }

    /// <summary>This runtime with ORT profiling of every session it creates (for mixlora-bench --profile).</summary>
    public OrtRuntime WithProfiling(string prefix) => new(Device, _epDevices) { ProfilePrefix = prefix, CudaGraphs = CudaGraphs };

    public static OrtRuntime Cpu { get; } = new(Device.Cpu, []);

    public static Device ParseDevice(string s) => s.ToLowerInvariant() switch
    {
        "cpu" => Device.Cpu,
        "cuda" or "gpu" => Device.Cuda,
        _ => throw Fail.User($"unknown device '{s}'", "use --device cpu or --device cuda"),
    };

    public static OrtRuntime For(Device device) => device == Device.Cpu ? Cpu : new(Device.Cuda, CudaDevices());

    /// <summary>Memory info of the device this runtime computes on (the EP device's own, for CUDA).</summary>
    public OrtMemoryInfo DeviceMemory => Device == Device.Cpu
        ? OrtMemoryInfo.DefaultInstance
        : _epDevices[0].GetMemoryInfo(OrtDeviceMemoryType.DEFAULT);

    /// <summary>
    /// The allocator for device-resident tensors: the CPU default, or the CUDA device's shared allocator
    /// owned by the environment (sessions use it only with MIXLORA_ENV_ALLOCATORS=1).
    /// </summary>
    public OrtAllocator DeviceAllocator()
    {
        if (Device == Device.Cpu) return OrtAllocator.DefaultInstance;
        lock (Gate)
        {
            var env = OrtEnv.Instance();
            return env.GetSharedAllocator(DeviceMemory)
                ?? env.CreateSharedAllocator(_epDevices[0], OrtDeviceMemoryType.DEFAULT, OrtAllocatorType.ArenaAllocator,
                    // the trainer's device tensors (weights, state) live here (sessions only with
                    // MIXLORA_ENV_ALLOCATORS=1): grow it by what is requested ("1" = kSameAsRequested), not by
                    // powers of two (the default)
                    new Dictionary<string, string> { ["arena.extend_strategy"] = "1" });
        }
    }

    /// <summary>
    /// Whether the CUDA grad step is captured as a CUDA graph after its first runs and replayed
    /// (`--cuda-graph`; see <see cref="CheckCudaGraphs"/>).
    /// </summary>
    public bool CudaGraphs { get; private init; }

    /// <summary>This runtime with the grad step replayed as a CUDA graph.</summary>
    public OrtRuntime WithCudaGraphs() => new(Device, _epDevices) { ProfilePrefix = ProfilePrefix, CudaGraphs = true };

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
    /// MIXLORA_STRICT_PLACEMENT=1: session creation fails when any node is assigned to the CPU. Off by
    /// default because ORT deliberately places small int64 shape computations on the CPU; placement of
    /// compute nodes is checked from the profiler instead (mixlora-bench reports it).
    /// </summary>
    public static bool StrictPlacement { get; } = Environment.GetEnvironmentVariable("MIXLORA_STRICT_PLACEMENT") == "1";

    /// <summary>MIXLORA_CUDA_OPTIONS="k=v;k=v" replaces the provider options (for diagnosis).</summary>
    private static Dictionary<string, string> ProviderOptions()
    {
        var env = Environment.GetEnvironmentVariable("MIXLORA_CUDA_OPTIONS");
        if (env != null) return env.Split(';', StringSplitOptions.RemoveEmptyEntries).Select(kv => kv.Split('=', 2)).ToDictionary(p => p[0], p => p[1]);
        // grow the arena by what is requested, not by powers of two; no TF32 (float32 graphs must compute
        // in float32: parity runs on the GPU drifted by 4e-4 with TF32 matmuls)
        return new() { ["arena_extend_strategy"] = "kSameAsRequested", ["use_tf32"] = "0" };
    }

    /// <summary>Session options with this runtime's provider; the caller may adjust them before use.</summary>
    /// <param name="strict">fail session creation when a node would fall back to the CPU (CUDA only; default <see cref="StrictPlacement"/>).</param>
    /// <param name="stream">a CUDA stream for the session to compute on (0: the provider's own).</param>
    public SessionOptions Options(bool profile = false, bool? strict = null, nint stream = 0)
    {
        var o = new SessionOptions
        {
            GraphOptimizationLevel = Environment.GetEnvironmentVariable("MIXLORA_ORT_OPT") switch
            {
                "disable" => GraphOptimizationLevel.ORT_DISABLE_ALL,
                "basic" => GraphOptimizationLevel.ORT_ENABLE_BASIC,
                "extended" => GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                _ => GraphOptimizationLevel.ORT_ENABLE_ALL,
            },
            // MIXLORA_ORT_LOG=0..4 (verbose..fatal) for diagnosis, e.g. 0 prints node placement
            LogSeverityLevel = int.TryParse(Environment.GetEnvironmentVariable("MIXLORA_ORT_LOG"), out var level)
                ? (OrtLoggingLevel)level : OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        // MIXLORA_ORT_THREADS=N sets ORT's intra-op threads (diagnosis; the default is ORT's, one on the 2-core CI machine)
        if (int.TryParse(Environment.GetEnvironmentVariable("MIXLORA_ORT_THREADS"), out var threads)) o.IntraOpNumThreads = threads;
        Kernels.CustomOps.AddTo(o);                                                         // com.mixlora kernels (fused MixLoRA experts)
        if (ProfilePrefix != null) o.ProfileOutputPathPrefix = ProfilePrefix;
        if (profile || ProfilePrefix != null) o.EnableProfiling = true;
        if (Device == Device.Cuda)
        {
            var provider = ProviderOptions();
            if (stream != 0) (provider["has_user_compute_stream"], provider["user_compute_stream"]) = ("1", ((ulong)stream).ToString(System.Globalization.CultureInfo.InvariantCulture));
            o.AppendExecutionProvider(OrtEnv.Instance(), _epDevices, provider);
            if (strict ?? StrictPlacement) o.AddSessionConfigEntry("session.disable_cpu_ep_fallback", "1");
            // each session allocates from its own arena, dynamically (no memory pattern). Measured on the H100
            // (README, GPU): with the environment's shared arena steps took 19-35% longer (7B MixLoRA 255 vs
            // 214 ms), and memory patterns kept the first run's allocations beside the pattern block (TinyLlama
            // MixLoRA 34-36 GiB against 20-21); MIXLORA_ENV_ALLOCATORS=1 / MIXLORA_MEM_PATTERN=1 bring either back
            if (Environment.GetEnvironmentVariable("MIXLORA_ENV_ALLOCATORS") == "1") o.AddSessionConfigEntry("session.use_env_allocators", "1");
            o.EnableMemoryPattern = Environment.GetEnvironmentVariable("MIXLORA_MEM_PATTERN") == "1";
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
            throw new InvalidOperationException($"ONNX Runtime rejected the graph on {Device}: {e.Message}", e);
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

    private static OrtEpDevice[] CudaDevices()
    {
        lock (Gate)
        {
            if (_cudaDevices != null) return _cudaDevices;
            var lib = FindCudaProvider();
            var env = OrtEnv.Instance();
            try
            {
                env.RegisterExecutionProviderLibrary("cuda", lib);
            }
            catch (OnnxRuntimeException e)
            {
                throw Fail.User($"could not load the CUDA provider {lib} ({e.Message})",
                    "check that CUDA 13 and cuDNN libraries are on LD_LIBRARY_PATH and a GPU driver is present");
            }
            var devices = env.GetEpDevices().Where(d => d.EpName == "CUDAExecutionProvider").ToArray();
            if (devices.Length == 0) throw Fail.User("the CUDA provider loaded but found no GPU", "run on a machine with an NVIDIA GPU, or use --device cpu");
            return _cudaDevices = devices[..1];
        }
    }

    /// <summary>
    /// ORT_CUDA_PROVIDER, else the provider beside libonnxruntime.so, else the npm cache (fetched on
    /// first use with tools/fetch-ort.sh --gpu).
    /// </summary>
    public static string FindCudaProvider()
    {
        const string name = "libonnxruntime_providers_cuda.so";
        var env = Environment.GetEnvironmentVariable("ORT_CUDA_PROVIDER");
        if (!string.IsNullOrEmpty(env))
        {
            return File.Exists(env) ? env : throw Fail.User($"ORT_CUDA_PROVIDER={env} does not exist", "point it at libonnxruntime_providers_cuda.so");
        }
        var beside = Path.Combine(AppContext.BaseDirectory, name);
        if (File.Exists(beside)) return beside;
        var cache = Environment.GetEnvironmentVariable("MIXLORA_CACHE") is { Length: > 0 } c ? c
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "mixlora");
        var cached = Path.Combine(cache, "ort-0.4.9", "com.github.asus4.onnxruntime.linux-x64-gpu", "package", "Plugins", "Linux", "x64", name);
        if (File.Exists(cached)) return cached;
        var script = FindUp("tools/fetch-ort.sh");
        if (script != null)
        {
            Console.Error.WriteLine("fetching the ONNX Runtime CUDA provider (230 MB, once)...");
            using var p = System.Diagnostics.Process.Start("bash", [script, cache, "--gpu"]);
            p.WaitForExit();
            if (File.Exists(cached)) return cached;
        }
        throw Fail.User($"the CUDA provider {name} was not found", "run tools/fetch-ort.sh --gpu, or set ORT_CUDA_PROVIDER");
    }

    private static string? FindUp(string relative)
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            var p = Path.Combine(d.FullName, relative);
            if (File.Exists(p)) return p;
        }
        return null;
    }
}
