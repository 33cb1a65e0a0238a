using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;

namespace MixLoRA.Cli.Diagnostics;

/// <summary>Small runs, each announced before it starts, to locate a failing runtime layer.</summary>
public static class Smoke
{
    public static void Run(OrtRuntime rt)
    {
        Step("fp32 Add, host tensors", () => Add(rt, DType.Float32));
        if (rt.Device == Device.Cuda) Step("bf16 MatMul, host tensors", () => MatMul(rt, DType.BFloat16));
        Step("device tensors + IoBinding", () => Bound(rt));
    }

    private static void Step(string name, Action body)
    {
        Console.Out.Write($"smoke: {name} ... ");
        Console.Out.Flush();
        body();
        Console.Out.WriteLine("ok");
        Console.Out.Flush();
    }

    private static void Add(OrtRuntime rt, DType t)
    {
        var b = new Builder("smoke");
        var x = b.Input("x", t, 2, 3);
        b.Output(b.Add(x, x), "y");
        using var r = new GraphRunner(rt, b.Build());
        var y = r.Run(new Dictionary<string, HostTensor> { ["x"] = HostTensor.Of(new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3) })["y"].Floats();
        if (y[5] != 12) throw Wrong(y[5], 12);
    }

    private static void MatMul(OrtRuntime rt, DType t)
    {
        var b = new Builder("smoke");
        var x = b.Input("x", t, 64, 64);
        b.Output(b.Cast(b.MatMul(x, x), DType.Float32), "y");
        using var r = new GraphRunner(rt, b.Build());
        var ones = Enumerable.Repeat(1f, 64 * 64).ToArray();
        var y = r.Run(new Dictionary<string, HostTensor> { ["x"] = new(t, [64, 64], TensorConvert.FromFloat32(ones, t)) })["y"].Floats();
        if (y[0] != 64) throw Wrong(y[0], 64);
    }

    private static UserError Wrong(float got, float expected) =>
        Fail.Runtime($"wrong result {got} (expected {expected})", "ONNX Runtime computes wrongly on this device: run mixlora-doctor --ort-checks, and train on the CPU meanwhile");

    private static void Bound(OrtRuntime rt)
    {
        var b = new Builder("smoke");
        var x = b.Input("x", DType.Float32, 4);
        b.Output(b.Mul(x, x), "y");
        using var s = new BoundSession(rt, OnnxWriter.ToBytes(b.Build()));
        Step("  allocator", () => rt.DeviceAllocator());
        using var store = new DeviceTensors(rt, s.Session);
        Microsoft.ML.OnnxRuntime.OrtValue? dx = null, dy = null;
        Step("  allocate", () => dy = store.Allocate(DType.Float32, [4]));
        Step("  upload", () => dx = store.Upload(HostTensor.Of(new float[] { 1, 2, 3, 4 }, 4)));
        Step("  download", () => store.Download(dx!));
        Step("  bound run", () => s.Run(new Dictionary<string, Microsoft.ML.OnnxRuntime.OrtValue> { ["x"] = dx! }, new Dictionary<string, Microsoft.ML.OnnxRuntime.OrtValue> { ["y"] = dy! }));
        var y = store.Download(dy!).Floats();
        if (y[3] != 16) throw Wrong(y[3], 16);
    }
}
