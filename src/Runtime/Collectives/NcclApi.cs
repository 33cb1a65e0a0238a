using System.Runtime.InteropServices;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Runtime.Collectives;

/// <summary>ncclUniqueId: 128 opaque bytes (NCCL_UNIQUE_ID_BYTES), passed by value to ncclCommInitRank.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct NcclUniqueId
{
    public const int Size = 128;
    public fixed byte Internal[Size];
}

/// <summary>
/// The NCCL (libnccl.so.2) and CUDA runtime (libcudart) entry points the collective uses, resolved as
/// <see cref="Kernels.CudaRtc"/> resolves the CUDA libraries: by soname through the loader (LD_LIBRARY_PATH), once.
/// NCCL reads its own environment (NCCL_*) as the user set it; nothing here sets or changes it.
/// </summary>
internal sealed unsafe class NcclApi
{
    public const int Float32 = 7, Sum = 0;                                              // ncclFloat32, ncclSum
    public const int Success = 0, InProgress = 7;                                       // ncclSuccess, ncclInProgress
    public const int CudaNotReady = 600;                                                // cudaErrorNotReady

    public delegate* unmanaged<NcclUniqueId*, int> GetUniqueId;
    public delegate* unmanaged<nint*, int, NcclUniqueId, int, int> CommInitRank;
    public delegate* unmanaged<nint, nint, nuint, int, int, nint, nint, int> AllReduce;
    public delegate* unmanaged<nint, nint, nuint, int, int, nint, nint, int> Broadcast;
    public delegate* unmanaged<nint, int*, int> CommGetAsyncError;
    public delegate* unmanaged<nint, int> CommAbort;
    public delegate* unmanaged<nint, int> CommDestroy;
    public delegate* unmanaged<int, nint> GetErrorString;
    public delegate* unmanaged<int*, int> GetVersion;

    public delegate* unmanaged<int, int> SetDevice;
    public delegate* unmanaged<int*, int> GetDeviceCount;
    public delegate* unmanaged<int> DeviceSynchronize;
    public delegate* unmanaged<nint*, uint, int> StreamCreateWithFlags;
    public delegate* unmanaged<nint, int> StreamQuery;
    public delegate* unmanaged<nint, int> StreamDestroy;
    public delegate* unmanaged<nint, int, nuint, nint, int> MemsetAsync;
    public delegate* unmanaged<int, nint> CudaErrorString;

    private static readonly Lock Gate = new();
    private static NcclApi? _api;

    /// <summary>The entry points, loaded on first use; a missing library is a user error naming it and where it comes from.</summary>
    public static NcclApi Get()
    {
        lock (Gate)
        {
            return _api ??= Load();
        }
    }

    private static NcclApi Load()
    {
        var nccl = Open(["libnccl.so.2", "libnccl.so"], "NCCL (libnccl.so.2)",
            "install NCCL for CUDA 13 (the CUDA install's, or pip nvidia-nccl-cu13) and put its lib folder on LD_LIBRARY_PATH, or train with --device cpu");
        var rt = Open(["libcudart.so.13", "libcudart.so.12", "libcudart.so"], "the CUDA runtime (libcudart.so.13)",
            "put the CUDA 13 runtime libraries on LD_LIBRARY_PATH (as ONNX Runtime's CUDA provider needs them)");
        return new NcclApi
        {
            GetUniqueId = (delegate* unmanaged<NcclUniqueId*, int>)NativeLibrary.GetExport(nccl, "ncclGetUniqueId"),
            CommInitRank = (delegate* unmanaged<nint*, int, NcclUniqueId, int, int>)NativeLibrary.GetExport(nccl, "ncclCommInitRank"),
            AllReduce = (delegate* unmanaged<nint, nint, nuint, int, int, nint, nint, int>)NativeLibrary.GetExport(nccl, "ncclAllReduce"),
            Broadcast = (delegate* unmanaged<nint, nint, nuint, int, int, nint, nint, int>)NativeLibrary.GetExport(nccl, "ncclBroadcast"),
            CommGetAsyncError = (delegate* unmanaged<nint, int*, int>)NativeLibrary.GetExport(nccl, "ncclCommGetAsyncError"),
            CommAbort = (delegate* unmanaged<nint, int>)NativeLibrary.GetExport(nccl, "ncclCommAbort"),
            CommDestroy = (delegate* unmanaged<nint, int>)NativeLibrary.GetExport(nccl, "ncclCommDestroy"),
            GetErrorString = (delegate* unmanaged<int, nint>)NativeLibrary.GetExport(nccl, "ncclGetErrorString"),
            GetVersion = (delegate* unmanaged<int*, int>)NativeLibrary.GetExport(nccl, "ncclGetVersion"),
            SetDevice = (delegate* unmanaged<int, int>)NativeLibrary.GetExport(rt, "cudaSetDevice"),
            GetDeviceCount = (delegate* unmanaged<int*, int>)NativeLibrary.GetExport(rt, "cudaGetDeviceCount"),
            DeviceSynchronize = (delegate* unmanaged<int>)NativeLibrary.GetExport(rt, "cudaDeviceSynchronize"),
            StreamCreateWithFlags = (delegate* unmanaged<nint*, uint, int>)NativeLibrary.GetExport(rt, "cudaStreamCreateWithFlags"),
            StreamQuery = (delegate* unmanaged<nint, int>)NativeLibrary.GetExport(rt, "cudaStreamQuery"),
            StreamDestroy = (delegate* unmanaged<nint, int>)NativeLibrary.GetExport(rt, "cudaStreamDestroy"),
            MemsetAsync = (delegate* unmanaged<nint, int, nuint, nint, int>)NativeLibrary.GetExport(rt, "cudaMemsetAsync"),
            CudaErrorString = (delegate* unmanaged<int, nint>)NativeLibrary.GetExport(rt, "cudaGetErrorString"),
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

    /// <summary>NCCL's version as "major.minor.patch".</summary>
    public string Version()
    {
        int v;
        Nccl(GetVersion(&v), "ncclGetVersion");
        // NCCL_VERSION(X,Y,Z): X*10000 + Y*100 + Z from 2.9 on (X*1000 + Y*100 + Z before)
        return v >= 10000 ? $"{v / 10000}.{v / 100 % 100}.{v % 100}" : $"{v / 1000}.{v / 100 % 10}.{v % 100}";
    }

    public void Nccl(int result, string what)
    {
        if (result is Success or InProgress) return;
        throw Fail.Runtime($"{what} failed: NCCL error {result} ({NcclText(result)})", NcclFix(result));
    }

    public string NcclText(int result) => Marshal.PtrToStringUTF8(GetErrorString(result)) ?? "unknown";

    private static string NcclFix(int result) => result switch
    {
        1 => "a CUDA call inside NCCL failed: check the GPU (nvidia-smi) and that every rank has its own GPU (LOCAL_RANK)",
        2 or 6 => "a rank or the network between them failed: see the other ranks' output; NCCL_DEBUG=INFO tells more",
        _ => "NCCL_DEBUG=INFO tells more; check that every rank runs the same program and NCCL",
    };

    public void Cuda(int result, string what)
    {
        if (result == 0) return;
        throw Fail.Runtime($"{what} failed: CUDA error {result} ({Marshal.PtrToStringUTF8(CudaErrorString(result)) ?? "unknown"})",
            "check the GPU and its driver (nvidia-smi), and that LOCAL_RANK names a GPU of this host");
    }
}
