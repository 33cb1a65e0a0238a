using System.Diagnostics;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Optim;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Data;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Trainer.Jobs;

/// <summary>
/// One job's run inside <see cref="JobsLoop"/>: its folder (locked), data stream, schedule, metrics and the step
/// in progress; what a single `mixlora-train` run holds, with the same outputs.
/// </summary>
internal sealed class JobRun : IDisposable
{
    private RunFolder? _folder;
    private Metrics? _metrics;
    private BatchStream? _stream, _eval;
    private LrSchedule? _schedule;
    private AdapterConfig? _adapter;
    private TrainOptions _o = null!;
    private IReadOnlyList<Batch> _pending = [];
    private int _next;
    private long _labels, _real, _end, _total, _start, _evaluated = -1;
    private readonly double[] _sums = new double[3];
    private double[,]? _load;
    private double _t0, _first = double.NaN, _last = double.NaN;
    private long _tokens;

    public required string Name { get; init; }
    public required int Index { get; init; }
    public string? Error { get; private set; }
    public TrainSummary? Summary { get; private set; }
    public bool Active => Error == null && Summary == null && _stream != null;
    public long StepIndex { get; private set; }
    public double Lr => _schedule!.At((int)StepIndex);

    /// <summary>The optimizer options and starting weights (null when the job failed before it started).</summary>
    public (OptimizerOptions, AdapterWeights, AdapterWeights?, AdapterWeights?)? Start { get; private set; }

    public static JobRun Open(JobSpec spec, int index, JobsOptions jo, Manifest manifest, ModelConfig model, TextWriter log)
    {
        var run = new JobRun { Name = spec.Name, Index = index };
        try
        {
            run.Prepare(spec, jo, manifest, model, log);
        }
        catch (UserError e)
        {
            run.Error = e.Message;
            Console.Error.WriteLine($"error: job {spec.Name}: {e.Message} (the other jobs go on)");
            run.Dispose();
        }
        return run;
    }

    private void Prepare(JobSpec spec, JobsOptions jo, Manifest manifest, ModelConfig model, TextWriter log)
    {
        var o = _o = spec.Options with { Artifacts = jo.Artifacts, Resume = jo.Resume, Overwrite = jo.Overwrite, Quiet = true, StopAfter = jo.StopAfter };
        var built = manifest.Jobs![Index];
        _folder = RunFolder.Take(o.Out, $"training job {Name}", log);
        if (!o.Resume) TrainLoop.Fresh(o);
        var examples = TrainLoop.LoadData(o, o.Data, manifest, model.VocabSize);
        TrainLoop.WarnMaskedRecords(examples, Console.Error);
        var r = manifest.MicroBatchSize;
        Fail.If(!o.Packing && o.BatchSize % r != 0, $"batch_size {o.BatchSize} is not a multiple of the {r} rows per job", "use a multiple, or \"packing\": true");
        _total = o.Steps ?? (long)Math.Ceiling(examples.Count * (o.Epochs ?? 1) / o.BatchSize);
        _adapter = AdapterConfig.Load(Path.Combine(o.Artifacts, built.AdapterDir));
        _schedule = new LrSchedule(LrSchedule.ParseKind(o.LrScheduler), o.Lr, o.WarmupSteps, _total);
        var (start, position, init, m, v) = TrainLoop.StartingPoint(o, built.Trainable, Path.Combine(o.Artifacts, built.AdapterDir), _total, log);
        (StepIndex, _start) = (start, start);
        _end = o.StopAfter is { } stop ? Math.Min(_total, start + stop) : _total;
        Start = (new OptimizerOptions(new AdamWOptions(WeightDecay: o.WeightDecay), o.MaxGradNorm), init, m, v);
        var pad = model.PadTokenId ?? 0;
        _stream = new BatchStream(examples, new BatchOptions(o.BatchSize, r, pad, manifest.SeqLen, o.Shuffle, o.GroupByLength, o.Packing), position);
        if (o.EvalData.Count > 0)
            _eval = new BatchStream(TrainLoop.LoadData(o, o.EvalData, manifest, model.VocabSize), new BatchOptions(r, r, pad, manifest.SeqLen, Packing: o.Packing), DataPosition.Start(0));
        _metrics = new Metrics(o.Out, start, _total, quiet: true);
        if (StepIndex >= _end) Error = $"--resume: the checkpoint is at step {StepIndex}, nothing is left of its {_total} steps";
    }

    public string Describe() => Active ? $"{Name}: {_adapter!.PeftType} {_end - StepIndex} steps of {_o.BatchSize}" : $"{Name}: failed";

    /// <summary>The next micro-batch of this job's step (starting a step when none is in progress), its shares and whether it is the step's first.</summary>
    public (Batch, (double, double), bool) NextMicro(Stopwatch clock)
    {
        if (_next >= _pending.Count)
        {
            _pending = _stream!.NextStep();
            (_next, _labels, _real, _load, _t0) = (0, _pending.Sum(b => b.LabelTokens), _pending.Sum(b => b.RealTokens), null, clock.Elapsed.TotalSeconds);
            Array.Clear(_sums);
        }
        var b = _pending[_next];
        return (b, (StepRunner.Share(b.LabelTokens, _labels), StepRunner.Share(b.RealTokens, _real)), _next == 0);
    }

    /// <summary>Adds one micro-step's outputs; true when the step's last micro-batch has run.</summary>
    public bool Add(JobMicro m)
    {
        var share = StepRunner.Share(_pending[_next].RealTokens, _real);
        (_sums[0], _sums[1], _sums[2]) = (_sums[0] + m.Loss, _sums[1] + m.LmLoss, _sums[2] + m.AuxLoss);
        if (m.RouterLoad is { } a)
        {
            var e = _adapter!.NumExperts;
            _load ??= new double[a.Length / e, e];
            for (var i = 0; i < a.Length; i++) _load[i / e, i % e] += share * a[i];
        }
        return ++_next == _pending.Count;
    }

    /// <summary>After the optimizer: metrics, the stop checks, checkpoints, eval and, at the end, the adapter.</summary>
    public void FinishStep(JobsRunner runner, double gradNorm, Stopwatch clock, int? stopAfter)
    {
        var step = StepIndex;
        var r = new StepResult(_sums[0], _sums[1], _sums[2], gradNorm, _real, _load);
        var lr = Lr;
        if (!double.IsFinite(r.Loss) || !double.IsFinite(gradNorm))
        {
            Stop($"the loss became {r.Loss} (gradient norm {gradNorm}) at step {step}; " + (TrainLoop.NewestFinite(_o.Out) is { } keep ? $"the newest checkpoint with finite weights is {keep}" : "no checkpoint with finite weights was saved before it"));
            return;
        }
        (_first, _last, _tokens) = (double.IsNaN(_first) ? r.Loss : _first, r.Loss, _tokens + _real);
        _metrics!.Step(step, r, lr, clock.Elapsed.TotalSeconds - _t0);
        var done = ++StepIndex;
        if (_o.SaveSteps > 0 && done % _o.SaveSteps == 0 && done < _end) Save(runner, done);
        if (_eval != null && _o.EvalSteps > 0 && done % _o.EvalSteps == 0) RunEval(runner, step);
        if (done < _end) return;
        if (_eval != null && _evaluated != step) RunEval(runner, step);
        _metrics.Finish();
        var checkpoint = Save(runner, done);
        string? adapterDir = null;
        if (done == _total)
        {
            var s = runner.Jobs[Index].State;
            adapterDir = TrainLoop.SaveAdapter(_o, _adapter!, s.Download(s.Params));
        }
        Summary = new TrainSummary(done - _start, _first, _last, adapterDir, checkpoint, clock.Elapsed.TotalSeconds, _tokens, _metrics.Path, done, _total, _load);
    }

    private void RunEval(JobsRunner runner, long step)
    {
        var (loss, lm) = runner.Eval(Index, _eval!.All());
        _metrics!.Eval(step, loss, lm);
        _evaluated = step;
    }

    private string Save(JobsRunner runner, long done)
    {
        var s = runner.Jobs[Index].State;
        var info = new CheckpointInfo(done, _stream!.Position.ToJson(), _o.Seed, _o.LrScheduler, _o.Lr, _o.WarmupSteps, _total);
        return Checkpoints.Save(_o.Out, info, _adapter!, s.Download(s.Params), s.Download(s.M), s.Download(s.V));
    }

    private void Stop(string error)
    {
        _metrics?.Finish();
        Error = error;
    }

    public string Progress() => Error != null ? $"{Name} failed" : $"{Name} {StepIndex}/{_total}{(double.IsNaN(_last) ? "" : $" loss {_last:F4}")}";

    public void Dispose()
    {
        _metrics?.Dispose();
        _metrics = null;
        _folder?.Dispose();
        _folder = null;
    }
}
