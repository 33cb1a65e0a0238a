using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;

namespace MixLoRA.Runtime;

/// <summary>
/// The native libonnxruntime.so that the managed API (NuGet Microsoft.ML.OnnxRuntime.Managed) binds to, resolved
/// the way its DllImport("onnxruntime") is: the custom-op kernels call the C API of this same copy.
/// </summary>
internal static class OrtLibrary
{
    private static readonly Lazy<nint> Loaded = new(() =>
    {
        _ = OrtEnv.Instance();                                                       // the managed API loads it first
        return NativeLibrary.Load("onnxruntime", typeof(OrtEnv).Assembly, null);
    });

    public static nint Handle => Loaded.Value;

    /// <summary>The file the handle was loaded from (dladdr of OrtGetApiBase).</summary>
    public static string Path
    {
        get
        {
            var symbol = NativeLibrary.GetExport(Handle, "OrtGetApiBase");
            return Dladdr(symbol, out var info) != 0 && Marshal.PtrToStringUTF8(info.FileName) is { } f ? f
                : System.IO.Path.Combine(AppContext.BaseDirectory, "libonnxruntime.so");
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct DlInfo
    {
        public nint FileName, BaseAddress, SymbolName, SymbolAddress;
    }

    [DllImport("libc", EntryPoint = "dladdr")]
    private static extern int Dladdr(nint address, out DlInfo info);
}
