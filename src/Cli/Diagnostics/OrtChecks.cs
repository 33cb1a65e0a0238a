using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;

namespace MixLoRA.Cli.Diagnostics;

/// <summary>
/// The patterns that failed on ORT 1.29's CUDA provider and that the graphs or the runtime work around
/// (docs: "ORT CUDA issues"), each as a tiny graph run on the device and compared with the CPU provider.
/// `mixlora-doctor --device cuda --ort-checks` runs each in a child process, so one that still takes the
/// process down (as 1.29's Slice did) is reported and the rest still run.
/// </summary>
public static class OrtChecks
{
    private sealed record Check(string Name, string Workaround, Func<OrtRuntime, string> Run);

    private static readonly Check[] All =
    [
        new("slice-static", "static slices emitted as Split", SliceStatic),
        new("scatter-add", "GatherElements/TopK adjoints as one-hot Equal/Where/ReduceSum", ScatterAdd),
        new("size", "ReduceMean's gradient takes a constant count", Size),
        new("gather-elements-computed", "the composed loss picks log p(target) by a one-hot sum", GatherComputed),
        new("host-binding", "only device tensors are bound; host data is copied explicitly", HostBinding),
        new("reducemean-16bit", "16-bit row means are taken in float32", ReduceMean16),
    ];

    public static IEnumerable<string> Names => All.Select(c => c.Name);

    /// <summary>Runs every check in its own process; returns how many still fail.</summary>
    public static int RunIsolated(string device, TextWriter log)
    {
        var failing = 0;
        foreach (var c in All)
        {
            var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var a in SelfArgs()) psi.ArgumentList.Add(a);
            foreach (var a in new[] { "doctor", "--device", device, "--ort-check", c.Name }) psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            var stderr = p.StandardError.ReadToEndAsync();
            var stdout = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            var line = stdout.Split('\n').LastOrDefault(l => l.StartsWith("ort-check ", StringComparison.Ordinal));
            if (p.ExitCode == 0 && line != null && line.Contains(": ok", StringComparison.Ordinal))
            {
                log.WriteLine($"{line}   (1.29 workaround: {c.Workaround}; no longer needed)");
                continue;
            }
            failing++;
            var why = line ?? $"ort-check {c.Name}: process exited {p.ExitCode}: {Last(stderr.Result)}";
            log.WriteLine($"{why}   (1.29 workaround still needed: {c.Workaround})");
        }
        return failing;
    }

    /// <summary>Runs one check in this process and prints one line.</summary>
    public static int RunOne(OrtRuntime rt, string name)
    {
        var c = All.FirstOrDefault(x => x.Name == name)
            ?? throw MixLoRA.GraphBuilder.Fail.User($"unknown --ort-check '{name}'", $"use one of {string.Join(", ", Names)}");
        Console.Out.WriteLine($"ort-check {c.Name}: running");
        Console.Out.Flush();
        try
        {
            Console.Out.WriteLine($"ort-check {c.Name}: {c.Run(rt)}");
            return 0;
        }
        catch (Exception e) when (e is OnnxRuntimeException or InvalidOperationException or UserError)
        {
            Console.Out.WriteLine($"ort-check {c.Name}: FAILS: {e.Message.ReplaceLineEndings(" ")}");
            return 1;
        }
    }

    private static string[] SelfArgs()
    {
        var dll = typeof(OrtChecks).Assembly.Location;
        return Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? [dll] : [];
    }

    private const string WrongFix = "ONNX Runtime computes this wrongly on the device: report it with the ORT version and GPU, and train on the CPU meanwhile";

    private static string Last(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault()?.Trim() ?? "(no output)";

    /// <summary>Runs the graph on the device and on the CPU and compares every output.</summary>
    private static string Compare(OrtRuntime rt, Graph g, Dictionary<string, HostTensor> feeds)
    {
        var (dev, placement) = StrictOrNot(rt, OnnxWriter.ToBytes(g));
        using var _ = dev;
        using var cpu = new GraphRunner(rt.On(Device.Cpu), g);
        var (a, b) = (dev.Run(feeds), cpu.Run(feeds));
        var err = 0.0;
        foreach (var (k, v) in b)
        {
            var (x, y) = (Values(a[k]), Values(v));
            for (var i = 0; i < y.Length; i++) err = Math.Max(err, Math.Abs(x[i] - y[i]));
        }
        return err <= 1e-5 ? $"ok ({placement}, max |device − cpu| = {err:G3})" : throw Fail.Runtime($"wrong result: max |device − cpu| = {err:G3}", WrongFix);
    }

    /// <summary>A session with every node on the device if ORT can place them so, else with its CPU fallback.</summary>
    private static (GraphRunner Runner, string Placement) StrictOrNot(OrtRuntime rt, byte[] model)
    {
        try
        {
            return (new GraphRunner(rt, model, rt.Options(strict: true)), $"every node on {rt.Device}");
        }
        catch (UserError)
        {
            return (new GraphRunner(rt, model), "some nodes on the CPU");
        }
    }

    private static double[] Values(HostTensor t) => t.DType == DType.Int64 ? t.Longs().Select(l => (double)l).ToArray() : t.Doubles();

    private static HostTensor Floats(Random rng, params long[] shape) =>
        HostTensor.Of(Enumerable.Range(0, (int)shape.Aggregate(1L, (p, d) => p * d)).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray(), shape);

    /// <summary>The label shift of the loss: labels[:, 1:] on static bounds, with the Slice op itself.</summary>
    private static string SliceStatic(OrtRuntime rt)
    {
        var b = new Builder("slice_static");
        var labels = b.Input("labels", DType.Int64, 2, 64);
        var x = b.Input("x", DType.Float32, 2, 64, 32);
        b.Output(b.Apply1(SliceOps.SliceOp, [labels, b.Ints(1), b.Ints(64), b.Ints(1)]), "next");   // (2, 63)
        b.Output(b.Apply1(SliceOps.SliceOp, [x, b.Ints(0), b.Ints(16), b.Ints(-1)]), "half");       // (2, 64, 16)
        var rng = new Random(1);
        return Compare(rt, b.Build(), new() { ["labels"] = HostTensor.Of(Enumerable.Range(0, 128).Select(i => (long)i).ToArray(), 2, 64), ["x"] = Floats(rng, 2, 64, 32) });
    }

    /// <summary>ScatterElements with reduction "add" and repeated indices on the last axis.</summary>
    private static string ScatterAdd(OrtRuntime rt)
    {
        var b = new Builder("scatter_add");
        var idx = b.Input("idx", DType.Int64, 16, 2);
        var upd = b.Input("upd", DType.Float32, 16, 2);
        b.Output(b.ScatterElements(b.ZerosLike(b.Input("like", DType.Float32, 16, 8)), idx, upd, 1, "add"), "y");
        var rng = new Random(2);
        return Compare(rt, b.Build(), new()
        {
            ["idx"] = HostTensor.Of(Enumerable.Range(0, 32).Select(i => (long)(i % 3 == 0 ? 5 : i % 8)).ToArray(), 16, 2),
            ["upd"] = Floats(rng, 16, 2), ["like"] = Floats(rng, 16, 8),
        });
    }

    private static string Size(OrtRuntime rt)
    {
        var b = new Builder("size");
        var x = b.Input("x", DType.Float32, 3, 4);
        b.Output(b.Mul(x, b.Cast(b.Size(x), DType.Float32)), "y");
        return Compare(rt, b.Build(), new() { ["x"] = Floats(new Random(3), 3, 4) });
    }

    /// <summary>GatherElements whose indices are computed in the graph (the shifted, clipped labels).</summary>
    private static string GatherComputed(OrtRuntime rt)
    {
        var b = new Builder("gather_computed");
        var labels = b.Input("labels", DType.Int64, 2, 8);
        var logits = b.Input("logits", DType.Float32, 16, 32);
        var next = b.Concat(1, b.Split(labels, 1, 1, 7)[1], b.Reshape(b.Ints(-100, -100), 2, 1));        // (2, 8)
        var idx = b.Reshape(b.Max(next, b.Int(0)), -1, 1);                                                             // (16, 1)
        b.Output(b.GatherElements(b.LogSoftmax(logits, -1), idx, 1), "picked");                                        // (16, 1)
        return Compare(rt, b.Build(), new()
        {
            ["labels"] = HostTensor.Of(Enumerable.Range(0, 16).Select(i => (long)((i * 7) % 32)).ToArray(), 2, 8),
            ["logits"] = Floats(new Random(4), 16, 32),
        });
    }

    /// <summary>A host-memory tensor bound into a device session's IoBinding.</summary>
    private static string HostBinding(OrtRuntime rt)
    {
        var b = new Builder("host_binding");
        var x = b.Input("x", DType.Float32, 4);
        b.Output(b.Mul(x, x), "y");
        using var s = new BoundSession(rt, OnnxWriter.ToBytes(b.Build()));
        using var store = new DeviceTensors(rt, s.Session);
        var y = store.Allocate(DType.Float32, [4]);
        var data = new float[] { 1, 2, 3, 4 };
        using var pin = new Pinned(data);
        using var host = OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float, [4], pin.Address, 16);
        s.Run(new Dictionary<string, OrtValue> { ["x"] = host }, new Dictionary<string, OrtValue> { ["y"] = y });
        var got = store.Download(y).Floats();
        return got.SequenceEqual([1f, 4, 9, 16]) ? "ok (host tensor bound into a device IoBinding)" : throw Fail.Runtime($"wrong result [{string.Join(", ", got)}], expected [1, 4, 9, 16]", WrongFix);
    }

    /// <summary>ReduceMean in bfloat16 and float16 with every node on the device.</summary>
    private static string ReduceMean16(OrtRuntime rt)
    {
        var rng = new Random(5);
        var x = Floats(rng, 8, 64);
        var expect = Enumerable.Range(0, 8).Select(r => x.Floats().Skip(r * 64).Take(64).Average()).ToArray();
        foreach (var t in new[] { DType.BFloat16, DType.Float16 })
        {
            var b = new Builder("reducemean16");
            var xi = b.Input("x", t, 8, 64);
            b.Output(b.Cast(b.ReduceMean(xi, [-1], keepDims: false), DType.Float32), "y");
            using var r = new GraphRunner(rt, OnnxWriter.ToBytes(b.Build()), rt.Options(strict: true));
            var y = r.Run(new Dictionary<string, HostTensor> { ["x"] = new(t, [8, 64], TensorConvert.FromFloat32(x.Floats(), t)) })["y"].Floats();
            var err = y.Zip(expect).Max(p => Math.Abs(p.First - p.Second));
            if (err > 0.02) throw Fail.Runtime($"{t.Name()} ReduceMean off by {err:G3}", WrongFix);
        }
        return "ok (bfloat16 and float16 ReduceMean kernels on the device)";
    }

    private sealed class Pinned(float[] data) : IDisposable
    {
        private System.Runtime.InteropServices.GCHandle _h = System.Runtime.InteropServices.GCHandle.Alloc(data, System.Runtime.InteropServices.GCHandleType.Pinned);
        public nint Address => _h.AddrOfPinnedObject();
        public void Dispose() => _h.Free();
    }
}
