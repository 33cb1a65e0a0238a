using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.GraphBuilder.Optim;
using MixLoRA.Runtime;

namespace MixLoRA.Trainer.Training;

/// <summary>
/// The optimizer step over the flat fp32 state, in chunks:
/// <code>
///   grads ──► optimizer_norm ──► grad_norm, update_scale (= grad_scale · clip factor)
///   for each chunk [o, o + n):  p, g, m, v views ──► AdamW (grad_scale := update_scale) ──► p, m, v views
/// </code>
/// One graph over the whole vector keeps several vector-sized fp32 temporaries alive (AdamW's products
/// and sums, 0.8 GB each for the 7B MixLoRA adapter); per chunk they are chunk-sized. The norm is global,
/// so clipping is the same as in one graph; each element's update is the same arithmetic.
/// <para>The outputs are bound to the inputs' memory (in place, no second buffers: 2.4 GB for that adapter).
/// That is safe for this graph: p, m and v are each read by one elementwise node, which runs before (m, v)
/// or is (p, without weight decay) the node writing the same element of the output; nothing reads them
/// after. Tests compare it bit for bit with the out-of-place graph.</para>
/// </summary>
public sealed class ChunkedOptimizer : IDisposable
{
    /// <summary>Elements per AdamW run (64 MB of fp32).</summary>
    public const long DefaultChunk = 1L << 24;

    private const string Flat = TrainGraphs.FlatParams;
    private readonly TrainState _state;
    private readonly BoundSession _norm;
    private readonly Dictionary<long, BoundSession> _update = [];
    private readonly OrtValue _updateScale;
    private readonly long _chunk;

    /// <param name="fused">update with the CPU kernel of <see cref="GraphBuilder.Ops.AdamWOps"/> (ignored on other devices).</param>
    public ChunkedOptimizer(OrtRuntime rt, DeviceTensors store, TrainState state, OptimizerOptions o, long chunk = DefaultChunk, bool fused = false)
    {
        GraphBuilder.Fail.If(chunk < 1, $"optimizer chunk {chunk} must be positive", "use the default");
        (_state, _chunk) = (state, Math.Min(chunk, Math.Max(1, state.Count)));
        _norm = new BoundSession(rt, OnnxWriter.ToBytes(OptimizerGraph.BuildNorm(Flat, state.Count, o.MaxGradNorm)));
        foreach (var n in new[] { _chunk, state.Count % _chunk }.Where(n => n > 0).Distinct())
        {
            _update[n] = new BoundSession(rt, OnnxWriter.ToBytes(OptimizerGraph.BuildUpdate(new ParamSpec(Flat, [n]), o.AdamW, fused && rt.Device == Device.Cpu)));
        }
        _updateScale = store.Allocate(DType.Float32, []);
    }

    /// <summary>Norm and update scale of the current gradients, then AdamW in place chunk by chunk.</summary>
    /// <param name="scalars">step, lr and grad_scale (device scalars).</param>
    /// <param name="gradNorm">where grad_norm goes.</param>
    public void Run(IReadOnlyDictionary<string, OrtValue> scalars, OrtValue gradNorm)
    {
        var s = _state;
        _norm.Run(
            new Dictionary<string, OrtValue> { [AdamW.GradName(Flat)] = s.Grads.Current, [OptimizerGraph.GradScaleInput] = scalars[OptimizerGraph.GradScaleInput] },
            new Dictionary<string, OrtValue> { [OptimizerGraph.GradNormOutput] = gradNorm, [OptimizerGraph.UpdateScaleOutput] = _updateScale });
        for (var offset = 0L; offset < s.Count; offset += _chunk)
        {
            var n = Math.Min(_chunk, s.Count - offset);
            OrtValue At(OrtValue buffer) => s.Slice(buffer, offset, n);
            var inputs = new Dictionary<string, OrtValue>
            {
                [AdamW.StepInput] = scalars[AdamW.StepInput], [AdamW.LrInput] = scalars[AdamW.LrInput],
                [OptimizerGraph.GradScaleInput] = _updateScale,
                [Flat] = At(s.Params), [AdamW.GradName(Flat)] = At(s.Grads.Current),
                [AdamW.MName(Flat)] = At(s.M), [AdamW.VName(Flat)] = At(s.V),
            };
            var outputs = new Dictionary<string, OrtValue>
            {
                [AdamW.NewName(Flat)] = At(s.Params), [AdamW.MNewName(Flat)] = At(s.M), [AdamW.VNewName(Flat)] = At(s.V),
            };
            _update[n].Run(inputs, outputs);
        }
    }

    /// <summary>How many AdamW runs a step takes.</summary>
    public long Chunks => (_state.Count + _chunk - 1) / _chunk;

    public void Dispose()
    {
        _norm.Dispose();
        foreach (var u in _update.Values) u.Dispose();
    }
}
