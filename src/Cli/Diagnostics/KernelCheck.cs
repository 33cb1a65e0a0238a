using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;
using MixLoRA.Runtime.Kernels;

namespace MixLoRA.Cli.Diagnostics;

/// <summary>
/// `mixlora-doctor --kernels`: runs the fused SwiGluSlots forward and backward on the runtime's device in
/// every dtype it has kernels for and compares all seven outputs with the CPU kernel (float32) on the same
/// inputs, rounded to the dtype first. The CPU kernel is itself checked against finite differences (catalog
/// tests); this is how the CUDA kernels are measured. With dropout the masks must be bit-identical (one
/// counter-based hash on both devices), or the errors are of order 1.
/// </summary>
public static class KernelCheck
{
    private static readonly string[] Outputs = ["h", "m", "d_dg", "d_du", "d_g", "d_u", "d_w"];

    /// <summary>Prints one line per (shape, dtype) and returns false when any output is off by more than its dtype's tolerance.</summary>
    public static bool Run(OrtRuntime rt, TextWriter log)
    {
        var ok = true;
        var types = rt.Device == Device.Cuda ? FusedKernels.CudaTypes : FusedKernels.CpuTypes;
        foreach (var (n, k, f) in new[] { (96L, 2L, 1024L), (33L, 3L, 77L), (8L, 8L, 5632L) })
        {
            foreach (var t in types)
            {
                foreach (var ratio in new[] { 0.0, 0.1 })
                {
                    var inputs = Inputs(n, k, f, t);
                    using var device = new GraphRunner(rt, Graph(t, ratio));
                    using var cpu = new GraphRunner(rt.On(Device.Cpu), Graph(DType.Float32, ratio));
                    var got = device.Run(inputs);
                    var want = cpu.Run(inputs);
                    ok &= Report(log, $"SwiGluSlots N={n} K={k} F={f} dropout {ratio}", t, Outputs, got, want);
                }
            }
        }
        foreach (var (n, v) in new[] { (37L, 32000L), (5L, 1000L) })
        {
            foreach (var t in types) ok &= CrossEntropy(rt, n, v, t, log);
        }
        return ok;
    }

    /// <summary>SoftmaxCrossEntropy forward (nll, lse) and backward against the CPU kernel; row 1 is ignored (−100).</summary>
    private static bool CrossEntropy(OrtRuntime rt, long n, long v, DType t, TextWriter log)
    {
        Graph Make(DType dt)
        {
            var b = new Builder("ce_check");
            var x = b.Cast(b.Input("x", DType.Float32, "n", "v"), dt);
            var tg = b.Input("t", DType.Int64, "n");
            var (nll, lse) = b.SoftmaxCrossEntropy(x, tg);
            var dx = b.Apply(CrossEntropyOps.SoftmaxCrossEntropyGradOp, [x, tg, lse, b.Input("d", DType.Float32, "n")])[0];
            b.Output(nll, "nll");
            b.Output(lse, "lse");
            b.Output(b.Cast(dx, DType.Float32), "dx");
            return b.Build();
        }
        var rng = new Random(23);
        var logits = Enumerable.Range(0, (int)(n * v)).Select(_ => (float)(4 * ((2 * rng.NextDouble()) - 1))).ToArray();
        if (t != DType.Float32) logits = TensorConvert.ToFloat32(t, TensorConvert.FromFloat32(logits, t));
        var feeds = new Dictionary<string, HostTensor>
        {
            ["x"] = HostTensor.Of(logits, n, v),
            ["t"] = HostTensor.Of(Enumerable.Range(0, (int)n).Select(i => i == 1 ? -100L : rng.NextInt64(v)).ToArray(), n),
            ["d"] = HostTensor.Of(Enumerable.Range(0, (int)n).Select(_ => (float)rng.NextDouble()).ToArray(), n),
        };
        using var device = new GraphRunner(rt, Make(t));
        using var cpu = new GraphRunner(rt.On(Device.Cpu), Make(DType.Float32));
        var (got, want) = (device.Run(feeds), cpu.Run(feeds));
        return Report(log, $"SoftmaxCrossEntropy N={n} V={v}", t, ["nll", "lse", "dx"], got, want);
    }

    /// <summary>float32 inputs x0..x6 (G, U, DG, DU, W, dM, dH); all but W cast to <paramref name="t"/>; outputs as float32.</summary>
    private static Graph Graph(DType t, double ratio)
    {
        var b = new Builder("kernel_check");
        Value In(int i, params Dim[] dims) => b.Input($"x{i}", DType.Float32, dims);
        var x = new[] { In(0, "n", "f"), In(1, "n", "f"), In(2, "n", "k", "f"), In(3, "n", "k", "f"), In(4, "n", "k"), In(5, "n", "f"), In(6, "n", "k", "f") };
        Value C(int i) => i == 4 ? x[i] : b.Cast(x[i], t);
        var seed = ratio > 0 ? b.Input("x7", DType.Int64, Shape.Scalar) : null;
        var (h, m) = b.SwiGluSlots(C(0), C(1), C(2), C(3), C(4), seed, ratio, salt: 5);
        var attrs = seed is null ? null : A.Of(("ratio", ratio), ("salt", 5L));
        var g = b.Apply(SwiGluSlotsOps.SwiGluSlotsGradOp, seed is null ? [C(0), C(1), C(2), C(3), C(4), C(5), C(6)] : [C(0), C(1), C(2), C(3), C(4), C(5), C(6), seed], attrs);
        Value[] outs = [h, m, g[0], g[1], g[2], g[3], g[4]];
        for (var i = 0; i < outs.Length; i++) b.Output(b.Cast(outs[i], DType.Float32), Outputs[i]);
        return b.Build();
    }

    private static Dictionary<string, HostTensor> Inputs(long n, long k, long f, DType t)
    {
        var rng = new Random(17);
        HostTensor R(double scale, params long[] dims)
        {
            var v = new float[(int)dims.Aggregate(1L, (a, c) => a * c)];
            for (var i = 0; i < v.Length; i++) v[i] = (float)(scale * ((2 * rng.NextDouble()) - 1));
            var rounded = t == DType.Float32 ? v : TensorConvert.ToFloat32(t, TensorConvert.FromFloat32(v, t));   // exact in t
            return HostTensor.Of(rounded, dims);
        }
        var w = R(1, n, k);
        return new Dictionary<string, HostTensor>
        {
            ["x0"] = R(3, n, f), ["x1"] = R(2, n, f), ["x2"] = R(0.5, n, k, f), ["x3"] = R(0.5, n, k, f),
            ["x4"] = HostTensor.Of(w.Floats().Select(Math.Abs).ToArray(), n, k), ["x5"] = R(1, n, f), ["x6"] = R(1, n, k, f), ["x7"] = HostTensor.Of([1234L]),
        };
    }

    /// <summary>Prints the worst output's error against the dtype's tolerance; true when within it.</summary>
    private static bool Report(TextWriter log, string what, DType t, string[] outputs, Dictionary<string, HostTensor> got, Dictionary<string, HostTensor> want)
    {
        var worst = outputs.Select(o => (o, Err: RelMax(got[o].Floats(), want[o].Floats()))).MaxBy(p => p.Err);
        var tol = t switch { DType.BFloat16 => 2e-2, DType.Float16 => 3e-3, _ => 1e-5 };
        log.WriteLine($"  {what} {t.Name(),-9} max error {worst.Err:E2} ({worst.o}) {(worst.Err <= tol ? "ok" : $"FAIL (tolerance {tol:E0})")}");
        return worst.Err <= tol;
    }

    /// <summary>max |a − b| / max |b| (errors relative to the tensor's scale, as 16-bit rounding is).</summary>
    private static double RelMax(float[] a, float[] b)
    {
        var scale = Math.Max(1e-12, b.Max(v => Math.Abs((double)v)));
        return a.Zip(b, (x, y) => Math.Abs((double)x - y)).DefaultIfEmpty(0).Max() / scale;
    }
}
