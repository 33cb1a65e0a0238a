using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder.Autodiff;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;

namespace MixLoRA.Cli.Diagnostics;

/// <summary>One op × dtype probe: did forward + its gradient rule run with every node on the device?</summary>
public sealed record ProbeResult(string Op, string Case, string DType, bool Ok, string? Error);

/// <summary>
/// Runs each catalog op's first gradient-check case, forward and backward, in a given float dtype with
/// strict placement (no CPU fallback), so the kernels a dtype lacks on a provider are known up front.
/// </summary>
public static class OpProbe
{
    public static IReadOnlyList<ProbeResult> Run(OrtRuntime rt, IEnumerable<DType> dtypes, Action<ProbeResult>? onResult = null)
    {
        var results = new List<ProbeResult>();
        foreach (var op in Catalog.All.Where(d => d.Grad != null && !d.Cases.IsEmpty))
        {
            foreach (var dtype in dtypes)
            {
                var c = op.Cases[0];
                var r = Probe(rt, op, c, dtype);
                results.Add(r);
                onResult?.Invoke(r);
            }
        }
        return results;
    }

    private static ProbeResult Probe(OrtRuntime rt, OpDef op, GradCase c, DType dtype)
    {
        try
        {
            var (graph, feeds) = Build(c, dtype);
            using var options = rt.Options(strict: true);
            using var runner = new GraphRunner(rt, OnnxWriter.ToBytes(graph), options);
            var outs = runner.Run(feeds);
            if (outs.Values.Any(t => t.DType.IsFloat() && t.Floats().Any(f => !float.IsFinite(f)))) return new ProbeResult(op.Key, c.Label, dtype.Name(), false, "non-finite output");
            return new ProbeResult(op.Key, c.Label, dtype.Name(), true, null);
        }
        catch (Exception e) when (e is OnnxRuntimeException or InvalidOperationException or UserError)
        {
            var msg = e.InnerException?.Message ?? e.Message;
            return new ProbeResult(op.Key, c.Label, dtype.Name(), false, msg.Split('\n')[0]);
        }
    }

    private static (Graph Graph, Dictionary<string, HostTensor> Feeds) Build(GradCase c, DType dtype)
    {
        var b = new Builder("probe");
        var rng = new Random(1);
        var feeds = new Dictionary<string, HostTensor>();
        var xs = c.Inputs.Select((s, i) =>
        {
            var t = s.DType.IsFloat() ? dtype : s.DType;
            feeds[$"x{i}"] = Fill(s, t, rng);
            return b.Input($"x{i}", t, Shape.Of(s.Dims));
        }).ToArray();
        var y = c.Forward(b, xs);
        var loss = b.ReduceSum(b.Cast(y, DType.Float32));
        b.Output(loss, "loss");
        var floats = xs.Where(v => v.DType.IsFloat()).ToArray();
        var grads = Gradients.Emit(b, b.Cast(loss, dtype) is var l && dtype == DType.Float32 ? loss : l, floats);
        foreach (var v in floats) b.Output(b.Cast(grads[v.Name], DType.Float32), $"grad_{v.Name}");
        return (b.Build(), feeds);
    }

    private static HostTensor Fill(Spec s, DType t, Random rng)
    {
        var n = (int)s.Dims.Aggregate(1L, (a, b) => a * b);
        return s.Gen switch
        {
            Gen.Index => HostTensor.Of(Enumerable.Range(0, n).Select(_ => (long)rng.Next((int)s.Max)).ToArray(), s.Dims),
            Gen.IntConst => HostTensor.Of(s.Values!, s.Dims),
            Gen.Bool => HostTensor.Of(Enumerable.Range(0, n).Select(_ => rng.Next(2) == 1).ToArray(), s.Dims),
            _ => new HostTensor(t, s.Dims, TensorConvert.FromFloat32(Enumerable.Range(0, n).Select(i => 0.5f + (i * 0.37f % 1.5f)).ToArray(), t)),
        };
    }
}
