using System.Runtime.InteropServices;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Runtime.Kernels;

/// <summary>
/// Compiles the trainer's CUDA kernels with NVRTC (libnvrtc, part of the CUDA runtime libraries ORT's CUDA
/// provider already needs) and launches them through the CUDA driver API (libcuda) on ORT's stream. The
/// module is built once per CUDA context, for the device's compute capability, on the first launch.
/// </summary>
internal static unsafe class CudaRtc
{
    private static readonly Lock Gate = new();
    private static readonly Dictionary<nint, Module> Modules = [];

    /// <summary>The compiled kernels in one CUDA context and the functions looked up so far.</summary>
    private sealed record Module(nint Handle, Dictionary<string, nint> Functions);
    private static Api? _api;

    /// <summary>Whether NVRTC and the driver library load here (checked before fused graphs are built for CUDA).</summary>
    public static string? Unavailable()
    {
        try
        {
            _ = Libs();
            return null;
        }
        catch (UserError e)
        {
            return e.Message;
        }
    }

    /// <summary>Launches kernel <paramref name="name"/> with one block of <paramref name="threads"/> per grid index.</summary>
    public static void Launch(string name, uint blocks, uint threads, nint stream, void*[] args)
    {
        var api = Libs();
        var fn = Function(api, name);
        fixed (void** a = args)
        {
            Check(api, api.LaunchKernel(fn, blocks, 1, 1, threads, 1, 1, 0, stream, a, null), $"launching {name}");
        }
    }

    /// <summary>The calling thread's CUDA context: the device's primary one, made current when none is.</summary>
    internal static nint CurrentContext(Api api)
    {
        nint ctx;
        Check(api, api.CtxGetCurrent(&ctx), "cuCtxGetCurrent");
        if (ctx != 0) return ctx;
        // ORT's thread normally has the device's primary context current (the runtime API made it so)
        Check(api, api.Init(0), "cuInit");
        Check(api, api.PrimaryCtxRetain(&ctx, 0), "cuDevicePrimaryCtxRetain");
        Check(api, api.CtxSetCurrent(ctx), "cuCtxSetCurrent");
        return ctx;
    }

    private static nint Function(Api api, string name)
    {
        var ctx = CurrentContext(api);
        lock (Gate)
        {
            if (!Modules.TryGetValue(ctx, out var module)) Modules[ctx] = module = new Module(Load(api), []);
            if (module.Functions.TryGetValue(name, out var f)) return f;
            var text = Marshal.StringToCoTaskMemUTF8(name);
            try
            {
                Check(api, api.ModuleGetFunction(&f, module.Handle, text), $"finding kernel {name}");
            }
            finally
            {
                Marshal.FreeCoTaskMem(text);
            }
            return module.Functions[name] = f;
        }
    }

    /// <summary>The CUDA C++ NVRTC compiles: the SwiGluSlots kernels, then the loss's (which use the former's storage types).</summary>
    internal static string Source => ReadSource("SwiGluSlots.cu") + "\n" + ReadSource("CrossEntropy.cu");

    /// <summary>A kernel's `.cu` file, embedded in this assembly (Runtime.csproj: Kernels/*/*.cu), without its final newline.</summary>
    private static string ReadSource(string file)
    {
        using var stream = typeof(CudaRtc).Assembly.GetManifestResourceStream(ResourcePrefix + file)
            ?? throw Fail.Bug($"the CUDA source {file} is not embedded in {typeof(CudaRtc).Assembly.GetName().Name}");
        using var reader = new StreamReader(stream, System.Text.Encoding.UTF8);
        var text = reader.ReadToEnd();
        return text.EndsWith('\n') ? text[..^1] : text;
    }

    private const string ResourcePrefix = "MixLoRA.Runtime.Kernels.";

    /// <summary>NVRTC → PTX for compute_XY of the current device → module.</summary>
    private static nint Load(Api api)
    {
        int dev, major, minor;
        Check(api, api.CtxGetDevice(&dev), "cuCtxGetDevice");
        Check(api, api.DeviceGetAttribute(&major, 75, dev), "compute capability");           // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        Check(api, api.DeviceGetAttribute(&minor, 76, dev), "compute capability");           // ..._MINOR
        var ptx = Compile(api, Source, $"--gpu-architecture=compute_{major}{minor}");
        nint module;
        fixed (byte* p = ptx)
        {
            Check(api, api.ModuleLoadData(&module, p), "loading the compiled kernels");
        }
        return module;
    }

    private static byte[] Compile(Api api, string source, string arch)
    {
        var src = Marshal.StringToCoTaskMemUTF8(source);
        var file = Marshal.StringToCoTaskMemUTF8("mixlora_kernels.cu");
        var opts = new[] { arch, "--std=c++17" }.Select(Marshal.StringToCoTaskMemUTF8).ToArray();
        nint prog = 0;
        try
        {
            Rtc(api, api.CreateProgram(&prog, src, file, 0, null, null), "nvrtcCreateProgram");
            fixed (nint* o = opts)
            {
                if (api.CompileProgram(prog, opts.Length, o) != 0)
                {
                    throw Fail.Runtime($"NVRTC could not compile the fused kernels for {arch} ({Log(api, prog).ReplaceLineEndings(" | ")})",
                        "use an NVRTC (libnvrtc) that knows this GPU's architecture, or build the graphs with --no-fused-kernels");
                }
            }
            nuint size;
            Rtc(api, api.GetPtxSize(prog, &size), "nvrtcGetPTXSize");
            var ptx = new byte[(int)size];
            fixed (byte* p = ptx)
            {
                Rtc(api, api.GetPtx(prog, p), "nvrtcGetPTX");
            }
            return ptx;
        }
        finally
        {
            if (prog != 0) api.DestroyProgram(&prog);
            foreach (var o in opts) Marshal.FreeCoTaskMem(o);
            Marshal.FreeCoTaskMem(src);
            Marshal.FreeCoTaskMem(file);
        }
    }

    private static string Log(Api api, nint prog)
    {
        nuint size;
        if (api.GetProgramLogSize(prog, &size) != 0 || size == 0) return "(no log)";
        var log = new byte[(int)size];
        fixed (byte* p = log)
        {
            api.GetProgramLog(prog, p);
        }
        return System.Text.Encoding.UTF8.GetString(log).TrimEnd('\0');
    }

    private static void Rtc(Api api, int result, string what)
    {
        if (result != 0)
        {
            throw Fail.Runtime($"{what} failed: {Marshal.PtrToStringUTF8(api.RtcError(result))}",
                "check the CUDA runtime compiler (libnvrtc) on LD_LIBRARY_PATH, or build the graphs with --no-fused-kernels");
        }
    }

    internal static void Check(Api api, int result, string what)
    {
        if (result == 0) return;
        nint text = 0;
        api.GetErrorString(result, &text);
        const int OutOfMemory = 2;                                                      // CUDA_ERROR_OUT_OF_MEMORY
        throw Fail.Runtime($"{what}: CUDA error {result} ({(text == 0 ? "unknown" : Marshal.PtrToStringUTF8(text))})", result == OutOfMemory
            ? "the GPU is out of memory: free it, or use a smaller --micro-batch-size or --seq-len (or --gradient-checkpointing)"
            : "check the GPU and its driver (nvidia-smi), or build the graphs with --no-fused-kernels");
    }

    internal static Api Libs()
    {
        lock (Gate)
        {
            return _api ??= Api.Load();
        }
    }

    /// <summary>The driver and NVRTC entry points used here.</summary>
    internal sealed class Api
    {
        public delegate* unmanaged<uint, int> Init;
        public delegate* unmanaged<nint*, int, int> PrimaryCtxRetain;
        public delegate* unmanaged<nint, int> CtxSetCurrent;
        public delegate* unmanaged<nint*, int> CtxGetCurrent;
        public delegate* unmanaged<int*, int> CtxGetDevice;
        public delegate* unmanaged<int*, int, int, int> DeviceGetAttribute;
        public delegate* unmanaged<nint*, byte*, int> ModuleLoadData;
        public delegate* unmanaged<nint*, nint, nint, int> ModuleGetFunction;
        public delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int> LaunchKernel;
        public delegate* unmanaged<int, nint*, int> GetErrorString;
        public delegate* unmanaged<nint*, nint, nint, int, nint*, nint*, int> CreateProgram;
        public delegate* unmanaged<nint, int, nint*, int> CompileProgram;
        public delegate* unmanaged<nint, nuint*, int> GetPtxSize;
        public delegate* unmanaged<nint, byte*, int> GetPtx;
        public delegate* unmanaged<nint, nuint*, int> GetProgramLogSize;
        public delegate* unmanaged<nint, byte*, int> GetProgramLog;
        public delegate* unmanaged<nint*, int> DestroyProgram;
        public delegate* unmanaged<int, nint> RtcError;

        public static Api Load()
        {
            var cuda = Open(["libcuda.so.1", "libcuda.so"], "the CUDA driver library (libcuda.so.1)", "install the NVIDIA driver");
            var rtc = Open(["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"], "NVRTC (libnvrtc.so.13)",
                "put the CUDA runtime compiler on LD_LIBRARY_PATH (pip nvidia-cuda-nvrtc, or the CUDA toolkit's lib64), or build graphs with --no-fused-kernels");
            return new Api
            {
                Init = (delegate* unmanaged<uint, int>)NativeLibrary.GetExport(cuda, "cuInit"),
                PrimaryCtxRetain = (delegate* unmanaged<nint*, int, int>)NativeLibrary.GetExport(cuda, "cuDevicePrimaryCtxRetain"),
                CtxSetCurrent = (delegate* unmanaged<nint, int>)NativeLibrary.GetExport(cuda, "cuCtxSetCurrent"),
                CtxGetCurrent = (delegate* unmanaged<nint*, int>)NativeLibrary.GetExport(cuda, "cuCtxGetCurrent"),
                CtxGetDevice = (delegate* unmanaged<int*, int>)NativeLibrary.GetExport(cuda, "cuCtxGetDevice"),
                DeviceGetAttribute = (delegate* unmanaged<int*, int, int, int>)NativeLibrary.GetExport(cuda, "cuDeviceGetAttribute"),
                ModuleLoadData = (delegate* unmanaged<nint*, byte*, int>)NativeLibrary.GetExport(cuda, "cuModuleLoadData"),
                ModuleGetFunction = (delegate* unmanaged<nint*, nint, nint, int>)NativeLibrary.GetExport(cuda, "cuModuleGetFunction"),
                LaunchKernel = (delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int>)NativeLibrary.GetExport(cuda, "cuLaunchKernel"),
                GetErrorString = (delegate* unmanaged<int, nint*, int>)NativeLibrary.GetExport(cuda, "cuGetErrorString"),
                CreateProgram = (delegate* unmanaged<nint*, nint, nint, int, nint*, nint*, int>)NativeLibrary.GetExport(rtc, "nvrtcCreateProgram"),
                CompileProgram = (delegate* unmanaged<nint, int, nint*, int>)NativeLibrary.GetExport(rtc, "nvrtcCompileProgram"),
                GetPtxSize = (delegate* unmanaged<nint, nuint*, int>)NativeLibrary.GetExport(rtc, "nvrtcGetPTXSize"),
                GetPtx = (delegate* unmanaged<nint, byte*, int>)NativeLibrary.GetExport(rtc, "nvrtcGetPTX"),
                GetProgramLogSize = (delegate* unmanaged<nint, nuint*, int>)NativeLibrary.GetExport(rtc, "nvrtcGetProgramLogSize"),
                GetProgramLog = (delegate* unmanaged<nint, byte*, int>)NativeLibrary.GetExport(rtc, "nvrtcGetProgramLog"),
                DestroyProgram = (delegate* unmanaged<nint*, int>)NativeLibrary.GetExport(rtc, "nvrtcDestroyProgram"),
                RtcError = (delegate* unmanaged<int, nint>)NativeLibrary.GetExport(rtc, "nvrtcGetErrorString"),
            };
        }

        private static nint Open(string[] names, string what, string fix)
        {
            foreach (var n in names)
            {
                if (NativeLibrary.TryLoad(n, out var h)) return h;
            }
            throw Fail.Runtime($"{what} could not be loaded", fix);
        }
    }
}
