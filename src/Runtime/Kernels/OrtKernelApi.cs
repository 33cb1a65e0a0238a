using System.Runtime.InteropServices;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Runtime.Kernels;

/// <summary>
/// The few entries of ONNX Runtime's C API (OrtApi, version 29) that custom-op kernels need, called through
/// the function table that <c>OrtGetApiBase()->GetApi(29)</c> returns (ORT 1.32 serves every older version of
/// its append-only table). The managed ORT API still registers custom ops only from native libraries
/// (RegisterCustomOpLibrary); the indices are the entries' positions in <c>struct OrtApi</c> of
/// onnxruntime_c_api.h, the same order as the managed API's own OrtApi mirror.
/// </summary>
internal static unsafe class OrtKernelApi
{
    public const uint Version = 29;

    private const int CreateStatusAt = 0, GetErrorMessageAt = 2, CreateCustomOpDomainAt = 26, CustomOpDomainAddAt = 27, AddCustomOpDomainAt = 28;
    private const int GetTensorMutableDataAt = 51, GetTensorElementTypeAt = 60, GetDimensionsCountAt = 61, GetDimensionsAt = 62, GetTensorTypeAndShapeAt = 65;
    private const int GetInputCountAt = 88, GetOutputCountAt = 89, GetInputAt = 90, GetOutputAt = 91, ReleaseStatusAt = 93, ReleaseTypeAndShapeAt = 99;
    private const int GetGpuComputeStreamAt = 193, AttributeFloatAt = 85, AttributeInt64At = 86, ParallelForAt = 274;

    private static readonly Lazy<nint> Table = new(() =>
    {
        var lib = OrtLibrary.Handle;
        var getBase = (delegate* unmanaged<nint*>)NativeLibrary.GetExport(lib, "OrtGetApiBase");
        var apiBase = getBase();                                                     // { GetApi, GetVersionString }
        var api = ((delegate* unmanaged<uint, nint>)apiBase[0])(Version);
        return api != 0 ? api : throw Fail.Runtime($"the ONNX Runtime library {OrtLibrary.Path} does not provide C API version {Version}",
            "use the ONNX Runtime 1.32 library this build carries (tools/setup.sh, or tools/setup.sh cuda)");
    });

    private static nint Fn(int index) => ((nint*)Table.Value)[index];

    /// <summary>Throws with ORT's message when a status is not OK (null), releasing it.</summary>
    public static void Check(nint status, string what)
    {
        if (status == 0) return;
        var msg = Marshal.PtrToStringUTF8(((delegate* unmanaged<nint, nint>)Fn(GetErrorMessageAt))(status)) ?? "(no message)";
        ((delegate* unmanaged<nint, void>)Fn(ReleaseStatusAt))(status);
        throw Fail.Runtime($"{what}: ONNX Runtime: {msg}", "out of memory: free it or use a smaller --micro-batch-size or --seq-len; otherwise set MIXLORA_DEBUG=1 for the stack trace");
    }

    /// <summary>A failed status (ORT_FAIL) carrying <paramref name="message"/>, for KernelComputeV2.</summary>
    public static nint FailStatus(string message)
    {
        var text = Marshal.StringToCoTaskMemUTF8(message);
        try
        {
            return ((delegate* unmanaged<int, nint, nint>)Fn(CreateStatusAt))(1, text);
        }
        finally
        {
            Marshal.FreeCoTaskMem(text);
        }
    }

    public static nint CreateDomain(string name)
    {
        var text = Marshal.StringToCoTaskMemUTF8(name);                              // kept: ORT keeps the pointer
        nint domain;
        Check(((delegate* unmanaged<nint, nint*, nint>)Fn(CreateCustomOpDomainAt))(text, &domain), $"creating custom op domain {name}");
        return domain;
    }

    public static void AddOp(nint domain, nint op) =>
        Check(((delegate* unmanaged<nint, nint, nint>)Fn(CustomOpDomainAddAt))(domain, op), "adding a custom op");

    public static void AddDomain(nint sessionOptions, nint domain) =>
        Check(((delegate* unmanaged<nint, nint, nint>)Fn(AddCustomOpDomainAt))(sessionOptions, domain), "adding the custom op domain to session options");

    public static int InputCount(nint ctx)
    {
        nuint n;
        Check(((delegate* unmanaged<nint, nuint*, nint>)Fn(GetInputCountAt))(ctx, &n), "KernelContext_GetInputCount");
        return (int)n;
    }

    public static int OutputCount(nint ctx)
    {
        nuint n;
        Check(((delegate* unmanaged<nint, nuint*, nint>)Fn(GetOutputCountAt))(ctx, &n), "KernelContext_GetOutputCount");
        return (int)n;
    }

    /// <summary>Input i's OrtValue, or 0 for an omitted optional input.</summary>
    public static nint Input(nint ctx, int i)
    {
        nint v;
        Check(((delegate* unmanaged<nint, nuint, nint*, nint>)Fn(GetInputAt))(ctx, (nuint)i, &v), "KernelContext_GetInput");
        return v;
    }

    /// <summary>Output i allocated with the given dims; returns its OrtValue.</summary>
    public static nint Output(nint ctx, int i, ReadOnlySpan<long> dims)
    {
        nint v;
        fixed (long* d = dims)
        {
            Check(((delegate* unmanaged<nint, nuint, long*, nuint, nint*, nint>)Fn(GetOutputAt))(ctx, (nuint)i, d, (nuint)dims.Length, &v), "KernelContext_GetOutput");
        }
        return v;
    }

    public static nint Data(nint value)
    {
        nint p;
        Check(((delegate* unmanaged<nint, nint*, nint>)Fn(GetTensorMutableDataAt))(value, &p), "GetTensorMutableData");
        return p;
    }

    /// <summary>Element type (ONNX TensorProto enum) and dims of a tensor value.</summary>
    public static (int ElemType, long[] Dims) TypeAndShape(nint value)
    {
        nint info;
        Check(((delegate* unmanaged<nint, nint*, nint>)Fn(GetTensorTypeAndShapeAt))(value, &info), "GetTensorTypeAndShape");
        try
        {
            int type;
            nuint rank;
            Check(((delegate* unmanaged<nint, int*, nint>)Fn(GetTensorElementTypeAt))(info, &type), "GetTensorElementType");
            Check(((delegate* unmanaged<nint, nuint*, nint>)Fn(GetDimensionsCountAt))(info, &rank), "GetDimensionsCount");
            var dims = new long[(int)rank];
            fixed (long* d = dims)
            {
                Check(((delegate* unmanaged<nint, long*, nuint, nint>)Fn(GetDimensionsAt))(info, d, rank), "GetDimensions");
            }
            return (type, dims);
        }
        finally
        {
            ((delegate* unmanaged<nint, void>)Fn(ReleaseTypeAndShapeAt))(info);
        }
    }

    /// <summary>A node's float attribute, or <paramref name="fallback"/> when it has none.</summary>
    public static float AttributeFloat(nint info, string name, float fallback) => Attribute(AttributeFloatAt, info, name, fallback);

    /// <summary>A node's int attribute, or <paramref name="fallback"/> when it has none.</summary>
    public static long AttributeInt(nint info, string name, long fallback) => Attribute(AttributeInt64At, info, name, fallback);

    /// <summary>KernelInfoGetAttribute_float / _int64 (entry <paramref name="at"/>); a missing attribute's status is released.</summary>
    private static T Attribute<T>(int at, nint info, string name, T fallback) where T : unmanaged
    {
        var text = Marshal.StringToCoTaskMemUTF8(name);
        try
        {
            T v;
            var status = ((delegate* unmanaged<nint, nint, T*, nint>)Fn(at))(info, text, &v);
            if (status == 0) return v;
            ((delegate* unmanaged<nint, void>)Fn(ReleaseStatusAt))(status);
            return fallback;
        }
        finally
        {
            Marshal.FreeCoTaskMem(text);
        }
    }

    /// <summary>The CUDA stream (cudaStream_t) the kernel must run on.</summary>
    public static nint GpuStream(nint ctx)
    {
        nint s;
        Check(((delegate* unmanaged<nint, nint*, nint>)Fn(GetGpuComputeStreamAt))(ctx, &s), "KernelContext_GetGPUComputeStream");
        return s;
    }

    /// <summary>
    /// Runs body(0..total−1) on the session's intra-op thread pool (KernelContext_ParallelFor), the threads ORT
    /// keeps spinning between its own kernels; a .NET Parallel.For competed with them for the cores. The first
    /// exception a body throws is rethrown here.
    /// </summary>
    public static void ParallelFor(nint ctx, long total, Action<long> body)
    {
        var job = new ParallelJob(body);
        var handle = GCHandle.Alloc(job);
        try
        {
            Check(((delegate* unmanaged<nint, delegate* unmanaged<nint, nuint, void>, nuint, nuint, nint, nint>)Fn(ParallelForAt))(
                ctx, &ParallelBody, (nuint)total, 0, GCHandle.ToIntPtr(handle)), "KernelContext_ParallelFor");
        }
        finally
        {
            handle.Free();
        }
        if (job.Error is { } e) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e);
    }

    private sealed class ParallelJob(Action<long> body)
    {
        public Action<long> Body { get; } = body;
        public Exception? Error;
    }

    [UnmanagedCallersOnly]
    private static void ParallelBody(nint user, nuint i)
    {
        var job = (ParallelJob)GCHandle.FromIntPtr(user).Target!;
        try
        {
            job.Body((long)i);
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref job.Error, e, null);
        }
    }
}
