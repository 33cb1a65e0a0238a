using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.GraphBuilder.Optim;
using TrainableTensor = MixLoRA.GraphBuilder.Adapters.TrainableTensor;
using MixLoRA.Runtime;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Data;
using MixLoRA.Trainer.Model;

namespace MixLoRA.Trainer.Training;

/// <summary>
/// What one optimizer step measured: the losses over all of its label tokens (aux: each micro-batch's weighted by its
/// share of the real tokens), real (non-padding) tokens, and the router load over its real tokens.
/// </summary>
public sealed record StepResult(double Loss, double LmLoss, double AuxLoss, double GradNorm, long Tokens, double[,]? RouterLoad);

/// <summary>
/// Runs optimizer steps on the device: micro-batches through `grad_step` / `grad_accum_step` (gradients
/// accumulate in device buffers), then the optimizer (global norm and clip, then AdamW in place chunk by
/// chunk, see <see cref="ChunkedOptimizer"/>). Frozen weights are uploaded once and bound by name on every run.
/// </summary>
public sealed class StepRunner : IDisposable
{
    private readonly OrtRuntime _rt;
    private readonly Func<string, byte[]> _graphs;
    private readonly BoundSession _grad;
    private readonly Lazy<BoundSession> _gradAcc, _eval;
    private readonly ChunkedOptimizer _opt;
    private readonly DeviceTensors _store;
    private readonly Dictionary<string, OrtValue> _weights = new(StringComparer.Ordinal);
    private readonly StepIO _io;
    private int _gradRuns;

    /// <summary>Reads the graphs from the artifacts folder and the frozen weights from the manifest's model.</summary>
    public StepRunner(OrtRuntime rt, Manifest manifest, string artifactsDir, OptimizerOptions optimizer, AdapterWeights init, AdapterWeights? m = null, AdapterWeights? v = null)
        : this(rt, manifest, name => File.ReadAllBytes(Path.Combine(artifactsDir, manifest.Graphs[name].File)), new SafetensorsWeights(manifest.ModelPath), optimizer, init, m, v)
    {
    }

    /// <summary>
    /// Graphs come from <paramref name="graphs"/> (name → ONNX bytes, asked for `grad_step` at once and for
    /// `grad_accum_step` / `eval_step` on first use), frozen weights from <paramref name="weights"/>, which
    /// the runner disposes (when disposable) once they are uploaded.
    /// </summary>
    /// <param name="optimizerChunk">elements per AdamW run (<see cref="ChunkedOptimizer"/>; tests use small ones).</param>
    public StepRunner(OrtRuntime rt, Manifest manifest, Func<string, byte[]> graphs, IWeightProvider weights, OptimizerOptions optimizer, AdapterWeights init,
        AdapterWeights? m = null, AdapterWeights? v = null, long optimizerChunk = ChunkedOptimizer.DefaultChunk)
    {
        (_rt, _graphs, Manifest) = (rt, graphs, manifest);
        _gradAcc = new(() => Open("grad_accum_step"));
        _eval = new(() => Open("eval_step"));
        try
        {
            // --cuda-graph: ORT captures the grad step as a CUDA graph on a run after its first and replays it
            _grad = rt.CudaGraphs ? new BoundSession(rt, graphs("grad_step"), rt.Options(cudaGraph: true)) : Open("grad_step");
            _store = new DeviceTensors(rt, _grad.Session);
            UploadWeights(weights);
        }
        finally
        {
            (weights as IDisposable)?.Dispose();
        }
        var trainable = manifest.Trainable.Select(t => new TrainableTensor(t.Name, t.Shape, Init.Zeros)).ToArray();
        State = new TrainState(_store, rt, trainable);
        State.Load(init, m, v);
        _opt = new ChunkedOptimizer(rt, _store, State, optimizer, optimizerChunk, manifest.Fused.HasFlag(GraphBuilder.Ops.FusedOps.AdamW));
        _io = new StepIO(_store, manifest);
    }

    public Manifest Manifest { get; }
    public TrainState State { get; }
    public long DeviceBytes => _store.BytesAllocated;

    private BoundSession Open(string name) => new(_rt, _graphs(name));

    private void UploadWeights(IWeightProvider provider)
    {
        var declared = Manifest.Weights.ToDictionary(w => w.Name, w => new Value(w.Name, DTypes.Parse(w.DType), Shape.Of(w.Shape)));
        provider.Validate(declared);
        foreach (var (key, v) in declared) _weights[key] = _store.Upload(provider.Load(key, v.DType, v.S.ToLongs()));
    }

    /// <summary>
    /// One optimizer step over the given micro-batches (step is 1-based, as AdamW's t). With <paramref name="share"/>
    /// (data parallelism) this process runs only its micro-batches, with the whole step's token shares and each
    /// micro-batch's own dropout seed, and the share sums the gradients and losses over the processes before the optimizer.
    /// </summary>
    public StepResult Step(IReadOnlyList<Batch> micro, long step, double lr, Distributed.IStepShare? share = null)
    {
        var sums = new double[4];
        double[,]? load = null;
        var (labels, real) = (micro.Sum(b => b.LabelTokens), micro.Sum(b => b.RealTokens));
        var mine = share?.Mine(micro.Count) ?? [.. Enumerable.Range(0, micro.Count)];
        State.Grads.Reset();                                                              // the first micro-step writes one buffer (a captured graph's address)
        for (var j = 0; j < mine.Count; j++)
        {
            var (i, first) = (mine[j], j == 0);
            var session = first ? _grad : _gradAcc.Value;
            var (inputs, outputs) = Feeds(micro[i]);
            // the step's loss is the mean over all of its label tokens: each micro-batch weighs by its share
            var (lmw, auxw) = (Share(micro[i].LabelTokens, labels), Share(micro[i].RealTokens, real));
            _io.SetWeights(lmw, auxw);
            foreach (var (k, v) in _io.Weights) inputs[k] = v;
            // gradients land in place in the flat gradient buffer through per-tensor views; later micro-steps
            // add the current sum and write the other buffer
            foreach (var (k, v) in State.Views(first ? State.Grads.Current : State.Grads.Next)) outputs[AdamW.GradName(k)] = v;
            if (!first) foreach (var (k, v) in State.Views(State.Grads.Current)) inputs[TrainGraphs.AccName(k)] = v;
            if (_io.Seed is { } seed)
            {
                _io.SetSeed(step, i);
                inputs[GraphBuilder.Ops.SwiGluSlotsOps.SeedInput] = seed;
            }
            if (first && _rt.CudaGraphs) RunGraph(inputs, outputs);
            else session.Run(inputs, outputs);
            if (!first) State.Grads.Swap();
            _io.Accumulate(sums, ref load, auxw);
        }
        share?.Reduce(State.Grads.Current, State.Count, mine.Count == 0, sums, load ??= _io.EmptyLoad());
        _io.SetOptimizer(step, lr, 1.0);                                                  // the shares already sum the micro-steps to the step
        _opt.Run(_io.OptimizerInputs, _io.OptimizerOutputs[OptimizerGraph.GradNormOutput]);
        return new StepResult(sums[0], sums[1], sums[2], _io.GradNorm, real, load);
    }

    /// <summary>A micro-batch's share of the step's tokens (0 when the step has none): its lm_weight / aux_weight.</summary>
    internal static double Share(long part, long whole) => whole == 0 ? 0 : (double)part / whole;

    /// <summary>
    /// A replayed CUDA graph reuses every address of the captured run: from the second run on, every bound
    /// tensor must be the one bound before (per-step values, the batch and the seed, change in place).
    /// </summary>
    private void RunGraph(Dictionary<string, OrtValue> inputs, Dictionary<string, OrtValue> outputs)
    {
        if (_gradRuns++ > 0 && !_grad.BoundTo(inputs, outputs)) throw GraphBuilder.Fail.Bug("a grad_step tensor moved while the step replays as a CUDA graph");
        _grad.Run(inputs, outputs);
    }

    /// <summary>Token-weighted mean losses over the batches, with training off (no dropout).</summary>
    public (double Loss, double LmLoss, long Tokens) Eval(IEnumerable<Batch> batches)
    {
        double lm = 0, loss = 0, tokens = 0;
        foreach (var b in batches)
        {
            var (inputs, outputs) = Feeds(b);
            outputs[TrainGraphs.Logits] = _io.Scratch(_eval.Value, TrainGraphs.Logits);
            _eval.Value.Run(inputs, outputs);
            _io.ReadStepOutputs();
            var valid = _io.Value(TrainGraphs.ValidTokens);
            (lm, loss, tokens) = (lm + (_io.Value(TrainGraphs.LmLoss) * valid), loss + (_io.Value(TrainGraphs.Loss) * valid), tokens + valid);
        }
        return tokens == 0 ? (0, 0, 0) : (loss / tokens, lm / tokens, (long)tokens);
    }

    private (Dictionary<string, OrtValue> In, Dictionary<string, OrtValue> Out) Feeds(Batch b)
    {
        var inputs = new Dictionary<string, OrtValue>(_weights, StringComparer.Ordinal);
        foreach (var (k, v) in State.ParamViews()) inputs[k] = v;
        _io.Load(b);
        foreach (var (k, v) in _io.Batch) inputs[k] = v;
        var outputs = new Dictionary<string, OrtValue>(_io.StepOutputs, StringComparer.Ordinal);
        return (inputs, outputs);
    }

    public void Dispose()
    {
        _grad.Dispose();
        if (_gradAcc.IsValueCreated) _gradAcc.Value.Dispose();
        if (_eval.IsValueCreated) _eval.Value.Dispose();
        _opt.Dispose();
        State.Dispose();
        _store.Dispose();
    }
}
