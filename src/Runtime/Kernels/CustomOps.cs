using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;

namespace MixLoRA.Runtime.Kernels;

/// <summary>A node's attributes the kernels read: dropout ratio and salt (0 when absent), LoRA rank and scale (1 when absent).</summary>
internal readonly record struct NodeAttrs(float Ratio, long Salt, long Rank = 1, float Scale = 1);

/// <summary>One kernel of a custom op: ONNX element types per input/output, the provider it runs on (null: CPU).</summary>
internal sealed record KernelSpec(string Name, string? Provider, int[] Inputs, int OptionalFrom, int[] Outputs, Action<nint, NodeAttrs> Compute);

/// <summary>
/// Registers the trainer's own kernels (domain com.mixlora) with ONNX Runtime sessions through the C API's
/// custom-op interface: one OrtCustomOp struct per kernel in unmanaged memory whose callbacks are static C#
/// functions; they live for the process. Each session's options get the one shared domain.
/// </summary>
internal static unsafe class CustomOps
{
    /// <summary>
    /// struct OrtCustomOp of onnxruntime_c_api.h (version 29): a version and 25 function pointers. The V1
    /// CreateKernel/KernelCompute stay null: from version 16 ORT calls the V2 entries, which can return errors.
    /// </summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct OrtCustomOp
    {
        public uint Version;
        public nint CreateKernel, GetName, GetExecutionProviderType, GetInputType, GetInputTypeCount, GetOutputType, GetOutputTypeCount;
        public nint KernelCompute, KernelDestroy, GetInputCharacteristic, GetOutputCharacteristic, GetInputMemoryType;
        public nint GetVariadicInputMinArity, GetVariadicInputHomogeneity, GetVariadicOutputMinArity, GetVariadicOutputHomogeneity;
        public nint CreateKernelV2, KernelComputeV2, InferOutputShapeFn, GetStartVersion, GetEndVersion;
        public nint GetMayInplace, ReleaseMayInplace, GetAliasMap, ReleaseAliasMap;
    }

    private sealed record Registered(KernelSpec Spec, nint Name, nint Provider);

    /// <summary>One node's kernel: its op and attributes (behind a GCHandle while ORT holds the kernel).</summary>
    private sealed record Kernel(KernelSpec Spec, NodeAttrs Attrs);

    private static readonly Dictionary<nint, Registered> ByOp = [];
    private static readonly Lazy<nint> Domain = new(Build);

    /// <summary>Adds the com.mixlora kernels to these session options.</summary>
    public static void AddTo(SessionOptions options) => OrtKernelApi.AddDomain(options.DangerousGetHandle(), Domain.Value);

    private static nint Build()
    {
        var domain = OrtKernelApi.CreateDomain(GraphBuilder.Ops.FusedDomain.Name);
        foreach (var spec in SwiGluKernels.Specs().Concat(CrossEntropyKernels.Specs()).Concat(SlotLoraCpu.Specs()).Concat(AdamWCpu.Specs()))
        {
            var op = (OrtCustomOp*)NativeMemory.AllocZeroed((nuint)sizeof(OrtCustomOp));
            *op = Table();
            ByOp[(nint)op] = new Registered(spec, Marshal.StringToCoTaskMemUTF8(spec.Name), spec.Provider is null ? 0 : Marshal.StringToCoTaskMemUTF8(spec.Provider));
            OrtKernelApi.AddOp(domain, (nint)op);
        }
        return domain;
    }

    private static OrtCustomOp Table() => new()
    {
        Version = OrtKernelApi.Version,
        GetName = (nint)(delegate* unmanaged<nint, nint>)&GetName,
        GetExecutionProviderType = (nint)(delegate* unmanaged<nint, nint>)&GetProvider,
        GetInputType = (nint)(delegate* unmanaged<nint, nuint, int>)&GetInputType,
        GetInputTypeCount = (nint)(delegate* unmanaged<nint, nuint>)&GetInputCount,
        GetOutputType = (nint)(delegate* unmanaged<nint, nuint, int>)&GetOutputType,
        GetOutputTypeCount = (nint)(delegate* unmanaged<nint, nuint>)&GetOutputCount,
        KernelDestroy = (nint)(delegate* unmanaged<nint, void>)&Destroy,
        GetInputCharacteristic = (nint)(delegate* unmanaged<nint, nuint, int>)&InputCharacteristic,
        GetOutputCharacteristic = (nint)(delegate* unmanaged<nint, nuint, int>)&Required,
        GetInputMemoryType = (nint)(delegate* unmanaged<nint, nuint, int>)&Required,
        GetVariadicInputMinArity = (nint)(delegate* unmanaged<nint, int>)&One,
        GetVariadicInputHomogeneity = (nint)(delegate* unmanaged<nint, int>)&One,
        GetVariadicOutputMinArity = (nint)(delegate* unmanaged<nint, int>)&One,
        GetVariadicOutputHomogeneity = (nint)(delegate* unmanaged<nint, int>)&One,
        CreateKernelV2 = (nint)(delegate* unmanaged<nint, nint, nint, nint*, nint>)&CreateKernelV2,
        KernelComputeV2 = (nint)(delegate* unmanaged<nint, nint, nint>)&ComputeV2,
        GetStartVersion = (nint)(delegate* unmanaged<nint, int>)&One,
        GetEndVersion = (nint)(delegate* unmanaged<nint, int>)&MaxVersion,
        GetMayInplace = (nint)(delegate* unmanaged<int**, int**, nuint>)&NoPairs,
        ReleaseMayInplace = (nint)(delegate* unmanaged<int*, int*, void>)&ReleasePairs,
        GetAliasMap = (nint)(delegate* unmanaged<int**, int**, nuint>)&NoPairs,
        ReleaseAliasMap = (nint)(delegate* unmanaged<int*, int*, void>)&ReleasePairs,
    };

    private static KernelSpec Spec(nint op) => ByOp[op].Spec;

    private static nint NewKernel(nint op, nint info) =>
        GCHandle.ToIntPtr(GCHandle.Alloc(new Kernel(Spec(op), new NodeAttrs(OrtKernelApi.AttributeFloat(info, "ratio", 0), OrtKernelApi.AttributeInt(info, "salt", 0),
            OrtKernelApi.AttributeInt(info, "rank", 1), OrtKernelApi.AttributeFloat(info, "scale", 1)))));

    private static Kernel Of(nint kernel) => (Kernel)GCHandle.FromIntPtr(kernel).Target!;

    [UnmanagedCallersOnly]
    private static nint CreateKernelV2(nint op, nint api, nint info, nint* kernel)
    {
        try
        {
            *kernel = NewKernel(op, info);
            return 0;
        }
        catch (Exception e)
        {
            return OrtKernelApi.FailStatus($"{Spec(op).Name}: {e.Message}");
        }
    }

    [UnmanagedCallersOnly] private static nint GetName(nint op) => ByOp[op].Name;
    [UnmanagedCallersOnly] private static nint GetProvider(nint op) => ByOp[op].Provider;
    [UnmanagedCallersOnly] private static int GetInputType(nint op, nuint i) => Spec(op).Inputs[(int)i];
    [UnmanagedCallersOnly] private static nuint GetInputCount(nint op) => (nuint)Spec(op).Inputs.Length;
    [UnmanagedCallersOnly] private static int GetOutputType(nint op, nuint i) => Spec(op).Outputs[(int)i];
    [UnmanagedCallersOnly] private static nuint GetOutputCount(nint op) => (nuint)Spec(op).Outputs.Length;
    [UnmanagedCallersOnly] private static int InputCharacteristic(nint op, nuint i) => (int)i >= Spec(op).OptionalFrom ? 1 : 0;   // 1: optional
    [UnmanagedCallersOnly] private static int Required(nint op, nuint i) => 0;                                              // required; OrtMemTypeDefault
    [UnmanagedCallersOnly] private static int One(nint op) => 1;
    [UnmanagedCallersOnly] private static int MaxVersion(nint op) => int.MaxValue;
    [UnmanagedCallersOnly] private static void Destroy(nint kernel) => GCHandle.FromIntPtr(kernel).Free();

    [UnmanagedCallersOnly]
    private static nuint NoPairs(int** inputs, int** outputs)
    {
        *inputs = null;
        *outputs = null;
        return 0;
    }

    [UnmanagedCallersOnly] private static void ReleasePairs(int* inputs, int* outputs) { }

    [UnmanagedCallersOnly]
    private static nint ComputeV2(nint kernel, nint ctx)
    {
        var k = Of(kernel);
        try
        {
            k.Spec.Compute(ctx, k.Attrs);
            return 0;
        }
        catch (Exception e)
        {
            return OrtKernelApi.FailStatus($"{k.Spec.Name}: {e.Message}");
        }
    }
}
