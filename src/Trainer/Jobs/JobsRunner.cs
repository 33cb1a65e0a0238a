using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Optim;
using MixLoRA.Runtime;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Data;
using MixLoRA.Trainer.Model;
using MixLoRA.Trainer.Training;
using TrainableTensor = MixLoRA.GraphBuilder.Adapters.TrainableTensor;

namespace MixLoRA.Trainer.Jobs;

/// <summary>What one combined micro-step measured for one job (its weighted shares) — see <see cref="JobsRunner.Run"/>.</summary>
public sealed record JobMicro(double Loss, double LmLoss, double AuxLoss, double Valid, float[]? RouterLoad);

/// <summary>
/// Runs the multi-adapter graphs (<see cref="JobsGraphs"/>): one session over the shared frozen weights, and per job
/// its own flat state (<see cref="TrainState"/>) and optimizer (<see cref="ChunkedOptimizer"/>: its own clipping,
/// lr and step). Every micro-step runs the accumulating grad step; a job at the first micro-batch of its step adds
/// to a zero buffer, so jobs at different points of their steps share one run.
/// </summary>
public sealed class JobsRunner : IDisposable
{
    private readonly OrtRuntime _rt;
    private BoundSession _grad;
    private Lazy<BoundSession> _eval;
    private int[] _active;
    private readonly DeviceTensors _store;
    private readonly Dictionary<string, OrtValue> _weights = new(StringComparer.Ordinal);
    private readonly Dictionary<string, OrtValue> _batch = new(StringComparer.Ordinal);
    private readonly (int R, int T) _block;

    /// <summary>Graphs from the artifacts folder, frozen weights from the manifest's model.</summary>
    public JobsRunner(OrtRuntime rt, Manifest manifest, string artifactsDir, IReadOnlyList<(OptimizerOptions Options, AdapterWeights Init, AdapterWeights? M, AdapterWeights? V)> jobs)
        : this(rt, manifest, name => File.ReadAllBytes(Path.Combine(artifactsDir, manifest.Graphs[name].File)), new SafetensorsWeights(manifest.ModelPath), jobs)
    {
    }

    /// <summary>Graphs from <paramref name="graphs"/> (`grad_accum_step`, `eval_step` on first use), frozen weights from <paramref name="weights"/> (disposed once uploaded).</summary>
    public JobsRunner(OrtRuntime rt, Manifest manifest, Func<string, byte[]> graphs, IWeightProvider weights,
        IReadOnlyList<(OptimizerOptions Options, AdapterWeights Init, AdapterWeights? M, AdapterWeights? V)> jobs)
    {
        _rt = rt;
        var specs = manifest.Jobs ?? throw GraphBuilder.Fail.Bug("not a jobs manifest");
        _grad = new BoundSession(rt, graphs("grad_accum_step"));
        _eval = new(() => new BoundSession(rt, graphs("eval_step")));
        _store = new DeviceTensors(rt, _grad.Session);
        try
        {
            var declared = manifest.Weights.ToDictionary(w => w.Name, w => new Value(w.Name, DTypes.Parse(w.DType), Shape.Of(w.Shape)));
            weights.Validate(declared);
            foreach (var (key, v) in declared) _weights[key] = _store.Upload(weights.Load(key, v.DType, v.S.ToLongs()));
        }
        finally
        {
            (weights as IDisposable)?.Dispose();
        }
        _block = (manifest.MicroBatchSize, manifest.SeqLen);
        _active = Enumerable.Range(0, specs.Count).ToArray();
        AllocateBatch();
        Jobs = specs.Select((s, j) => new JobState(rt, _store, s, jobs[j], manifest)).ToArray();
        _seed = _store.Allocate(DType.Int64, []);
    }

    /// <summary>
    /// Continues with only the <paramref name="active"/> jobs (indices, in row-block order): the graphs from
    /// <paramref name="graphs"/> hold their rows alone, so finished or failed jobs cost nothing. Every job's state, the
    /// frozen weights and the optimizers stay where they are.
    /// </summary>
    public void Shrink(IReadOnlyList<int> active, Func<string, byte[]> graphs)
    {
        _grad.Dispose();
        if (_eval.IsValueCreated) _eval.Value.Dispose();
        _active = [.. active];
        _grad = new BoundSession(_rt, graphs("grad_accum_step"));
        _eval = new(() => new BoundSession(_rt, graphs("eval_step")));
        AllocateBatch();
    }

    private void AllocateBatch()
    {
        long[] shape = [_active.Length * (long)_block.R, _block.T];
        foreach (var name in new[] { ForwardGraph.InputIds, ForwardGraph.AttentionMask, ForwardGraph.PositionIds, TrainGraphs.Labels }) _batch[name] = _store.Allocate(DType.Int64, shape);
    }

    private readonly OrtValue _seed;
    private long _micro;

    public IReadOnlyList<JobState> Jobs { get; }
    public long DeviceBytes => _store.BytesAllocated;

    /// <summary>
    /// One combined micro-step: job j's rows hold <paramref name="blocks"/>[j] (null: empty rows, nothing learned), its
    /// loss weighted by its <paramref name="shares"/>; <paramref name="first"/>[j]: this is the first micro-batch of
    /// job j's step (its gradient starts from zero).
    /// </summary>
    public JobMicro?[] Run(Batch?[] blocks, (double Lm, double Aux)[] shares, bool[] first)
    {
        LoadBatch(blocks);
        var inputs = new Dictionary<string, OrtValue>(_weights, StringComparer.Ordinal);
        var outputs = new Dictionary<string, OrtValue>(StringComparer.Ordinal);
        foreach (var (k, v) in _batch) inputs[k] = v;
        if (_grad.Inputs.Contains(GraphBuilder.Ops.SwiGluSlotsOps.SeedInput))
        {
            // the fused dropout's seed: a new value every combined micro-step (one stream for all jobs)
            _store.CopyIn(MemoryMarshal.AsBytes(new[] { _micro++ }.AsSpan()), _seed);
            inputs[GraphBuilder.Ops.SwiGluSlotsOps.SeedInput] = _seed;
        }
        foreach (var j in _active) Jobs[j].Bind(inputs, outputs, shares[j], first[j], _store);
        _grad.Run(inputs, outputs);
        var result = new JobMicro?[Jobs.Count];
        foreach (var j in _active)
        {
            if (!first[j]) Jobs[j].State.Grads.Swap();
            result[j] = blocks[j] is null ? null : Jobs[j].Read(_store);
        }
        return result;
    }

    /// <summary>Clip and AdamW on job <paramref name="j"/>'s accumulated gradient; the gradient norm before clipping.</summary>
    public double Optimize(int j, long step, double lr) => Jobs[j].Optimize(_store, step, lr);

    /// <summary>Token-weighted mean eval losses of job <paramref name="j"/> over its batches (the other jobs' rows empty).</summary>
    public (double Loss, double LmLoss) Eval(int j, IEnumerable<Batch> batches)
    {
        double lm = 0, loss = 0, tokens = 0;
        foreach (var b in batches)
        {
            LoadBatch(Enumerable.Range(0, Jobs.Count).Select(i => i == j ? b : null).ToArray());
            var inputs = new Dictionary<string, OrtValue>(_weights, StringComparer.Ordinal);
            foreach (var (k, v) in _batch) inputs[k] = v;
            foreach (var job in _active.Select(i => Jobs[i])) foreach (var (k, v) in job.State.ParamViews()) inputs[job.Prefix + k] = v;
            var outputs = new Dictionary<string, OrtValue>(StringComparer.Ordinal);
            foreach (var job in _active.Select(i => Jobs[i])) foreach (var (k, v) in job.EvalOutputs(_eval.Value)) outputs[k] = v;
            _eval.Value.Run(inputs, outputs);
            var r = Jobs[j].Read(_store);
            (lm, loss, tokens) = (lm + (r.LmLoss * r.Valid), loss + (r.Loss * r.Valid), tokens + r.Valid);
        }
        return tokens == 0 ? (0, 0) : (loss / tokens, lm / tokens);
    }

    /// <summary>The active jobs' blocks (indexed by job) into the batch tensors, in row-block order.</summary>
    private void LoadBatch(Batch?[] byJob)
    {
        var (r, t) = _block;
        var blocks = _active.Select(j => byJob[j]).ToArray();
        var n = blocks.Length * r * t;
        var (ids, mask, pos, labels) = (new long[n], new long[n], new long[n], new long[n]);
        Array.Fill(labels, Example.IgnoreIndex);
        for (var i = 0; i < n; i++) pos[i] = i % t;
        for (var j = 0; j < blocks.Length; j++)
        {
            if (blocks[j] is not { } b) continue;
            GraphBuilder.Fail.If(b.B != r || b.T != t, $"job block ({b.B}, {b.T}) is not ({r}, {t})", "a bug: batches come from the job's stream");
            var at = j * r * t;
            b.InputIds.CopyTo(ids, at);
            b.AttentionMask.CopyTo(mask, at);
            b.PositionIds.CopyTo(pos, at);
            b.Labels.CopyTo(labels, at);
        }
        _store.CopyIn(MemoryMarshal.AsBytes(ids.AsSpan()), _batch[ForwardGraph.InputIds]);
        _store.CopyIn(MemoryMarshal.AsBytes(mask.AsSpan()), _batch[ForwardGraph.AttentionMask]);
        _store.CopyIn(MemoryMarshal.AsBytes(pos.AsSpan()), _batch[ForwardGraph.PositionIds]);
        _store.CopyIn(MemoryMarshal.AsBytes(labels.AsSpan()), _batch[TrainGraphs.Labels]);
    }

    public void Dispose()
    {
        _grad.Dispose();
        if (_eval.IsValueCreated) _eval.Value.Dispose();
        foreach (var j in Jobs) j.Dispose();
        _store.Dispose();
    }
}

/// <summary>One job's device state in a <see cref="JobsRunner"/>: parameters, moments, gradients, optimizer, outputs.</summary>
public sealed class JobState : IDisposable
{
    private readonly ChunkedOptimizer _opt;
    private readonly OrtValue _zeros;
    private readonly Dictionary<string, OrtValue> _outputs = new(StringComparer.Ordinal);
    private readonly Dictionary<string, OrtValue> _scalars = new(StringComparer.Ordinal);
    private readonly OrtValue _gradNorm, _lmWeight, _auxWeight;
    private readonly (int L, int E) _load;

    internal JobState(OrtRuntime rt, DeviceTensors store, JobManifest spec, (OptimizerOptions Options, AdapterWeights Init, AdapterWeights? M, AdapterWeights? V) start, Manifest m)
    {
        (Name, Prefix) = (spec.Name, JobsGraphs.Prefix(spec.Name));
        var trainable = spec.Trainable.Select(t => new TrainableTensor(t.Name, t.Shape, Init.Zeros)).ToArray();
        State = new TrainState(store, rt, trainable);
        State.Load(start.Init, start.M, start.V);
        _opt = new ChunkedOptimizer(rt, store, State, start.Options, fused: m.Fused.HasFlag(GraphBuilder.Ops.FusedOps.AdamW));
        _zeros = store.Upload(HostTensor.Of(new float[State.Count], State.Count));
        foreach (var what in new[] { TrainGraphs.Loss, TrainGraphs.LmLoss, TrainGraphs.AuxLoss, TrainGraphs.ValidTokens }) _outputs[JobsGraphs.Of(what, Name)] = store.Allocate(DType.Float32, []);
        if (m.Graphs["grad_accum_step"].Outputs.FirstOrDefault(o => o.Name == JobsGraphs.Of(TrainGraphs.RouterLoad, Name)) is { } rl)
        {
            _load = ((int)rl.Shape[0], (int)rl.Shape[1]);
            _outputs[rl.Name] = store.Allocate(DType.Float32, rl.Shape);
        }
        (_lmWeight, _auxWeight, _gradNorm) = (store.Allocate(DType.Float32, []), store.Allocate(DType.Float32, []), store.Allocate(DType.Float32, []));
        _scalars[AdamW.StepInput] = store.Allocate(DType.Int64, []);
        _scalars[AdamW.LrInput] = store.Allocate(DType.Float32, []);
        _scalars[OptimizerGraph.GradScaleInput] = store.Upload(HostTensor.Of([1f]) with { Shape = [] });
    }

    public string Name { get; }
    public string Prefix { get; }
    public TrainState State { get; }

    /// <summary>(layers, experts) of the router load, or (0, 0) without routing.</summary>
    public (int Layers, int Experts) LoadShape => _load;

    internal void Bind(Dictionary<string, OrtValue> inputs, Dictionary<string, OrtValue> outputs, (double Lm, double Aux) share, bool first, DeviceTensors store)
    {
        store.CopyIn(MemoryMarshal.AsBytes(new[] { (float)share.Lm }.AsSpan()), _lmWeight);
        store.CopyIn(MemoryMarshal.AsBytes(new[] { (float)share.Aux }.AsSpan()), _auxWeight);
        inputs[JobsGraphs.Of(TrainGraphs.LmWeight, Name)] = _lmWeight;
        inputs[JobsGraphs.Of(TrainGraphs.AuxWeight, Name)] = _auxWeight;
        foreach (var (k, v) in State.ParamViews()) inputs[Prefix + k] = v;
        var acc = first ? State.Views(_zeros) : State.Views(State.Grads.Current);
        foreach (var (k, v) in acc) inputs[TrainGraphs.AccName(Prefix + k)] = v;
        if (first) State.Grads.Reset();
        foreach (var (k, v) in State.Views(first ? State.Grads.Current : State.Grads.Next)) outputs[AdamW.GradName(Prefix + k)] = v;
        foreach (var (k, v) in _outputs) outputs[k] = v;
    }

    internal Dictionary<string, OrtValue> EvalOutputs(BoundSession eval) =>
        _outputs.Where(o => eval.Outputs.Contains(o.Key)).ToDictionary(o => o.Key, o => o.Value, StringComparer.Ordinal);

    internal JobMicro Read(DeviceTensors store)
    {
        float Get(string what) => store.Download(_outputs[JobsGraphs.Of(what, Name)]).Floats()[0];
        var load = _load.L > 0 ? store.Download(_outputs[JobsGraphs.Of(TrainGraphs.RouterLoad, Name)]).Floats() : null;
        return new JobMicro(Get(TrainGraphs.Loss), Get(TrainGraphs.LmLoss), Get(TrainGraphs.AuxLoss), Get(TrainGraphs.ValidTokens), load);
    }

    /// <summary>Clip and AdamW on this job's accumulated gradient; returns the gradient norm before clipping.</summary>
    public double Optimize(DeviceTensors store, long step, double lr)
    {
        store.CopyIn(MemoryMarshal.AsBytes(new[] { step }.AsSpan()), _scalars[AdamW.StepInput]);
        store.CopyIn(MemoryMarshal.AsBytes(new[] { (float)lr }.AsSpan()), _scalars[AdamW.LrInput]);
        _opt.Run(_scalars, _gradNorm);
        return store.Download(_gradNorm).Floats()[0];
    }

    public void Dispose()
    {
        _opt.Dispose();
        State.Dispose();
    }
}
