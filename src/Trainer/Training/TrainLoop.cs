using System.Diagnostics;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Optim;
using MixLoRA.Runtime;
using MixLoRA.Text.Data;
using MixLoRA.Text.Tokenization;
using MixLoRA.Trainer.Data;
using MixLoRA.Trainer.Distributed;

namespace MixLoRA.Trainer.Training;

/// <summary>
/// What a finished (or stopped) run reports: steps run by this call, first and last loss, where the adapter
/// (null when the run stopped early), the last checkpoint and metrics.jsonl are, time, tokens and the
/// per-layer router load of the last step ([layer, expert], null for plain LoRA).
/// </summary>
public sealed record TrainSummary(long Steps, double FirstLoss, double LastLoss, string? AdapterDir, string? LastCheckpoint, double Seconds, long Tokens,
    string MetricsPath = "", long FinalStep = 0, long TotalSteps = 0, double[,]? RouterLoad = null)
{
    /// <summary>The signal (2 SIGINT, 15 SIGTERM) that stopped the run after a checkpoint, or 0.</summary>
    public int StoppedBySignal { get; init; }

    public double TokensPerSecond => Tokens / Math.Max(Seconds, 1e-9);
}

/// <summary>
/// `mixlora-train`: data → micro-batches → <see cref="StepRunner"/> steps, with the LR schedule, metrics,
/// checkpoints every --save-steps and at the end, exact resume, eval, and a stop on a non-finite loss.
/// </summary>
public static class TrainLoop
{
    public static TrainSummary Run(TrainOptions o, TextWriter? log = null)
    {
        var writes = o.Ranks is not { Rank: > 0 };                                             // rank 0 of a data-parallel run (or a single process) writes the run
        log ??= o.Quiet || !writes ? TextWriter.Null : Console.Out;
        o.Validate();
        using var folder = writes ? RunFolder.Take(o.Out, "training", log) : null;            // before anything is written there
        if (!o.Resume && (writes || !o.Overwrite)) Fresh(o);                                // other ranks only check: the run folder is rank 0's to change
        var manifest = Manifest.Load(o.Artifacts);
        CheckModel(manifest, o.Artifacts);
        var micro = o.MicroBatchSize ?? manifest.MicroBatchSize;
        Fail.If(micro != manifest.MicroBatchSize, $"--micro-batch-size {micro} but the graphs were built for {manifest.MicroBatchSize}", $"rebuild with --micro-batch-size {micro} or drop the flag");
        Fail.If(!o.Packing && (o.BatchSize < micro || o.BatchSize % micro != 0), $"--batch-size {o.BatchSize} is not a multiple of the micro-batch size {micro}", "use a multiple of --micro-batch-size");
        var model = ModelConfig.Load(manifest.ModelPath);                                      // read once: vocabulary, pad id, divergence bound
        var examples = LoadData(o, o.Data, manifest, model.VocabSize);
        Fail.If(examples.Count == 0, "the training data has no records", "check the --data files");
        if (writes) WarnMaskedRecords(examples, Console.Error);                            // warnings show with --quiet too
        var total = o.Steps ?? (long)Math.Ceiling(examples.Count * (o.Epochs ?? 1) / o.BatchSize);
        Fail.If(total < 1, $"--steps {total} must be positive", "use --steps N or --epochs N");
        using var dp = o.Ranks is { } me
            ? DataParallel.Join(me, o.Device, RunDescription.Of(o, Path.Combine(o.Artifacts, Manifest.FileName), manifest.ModelFingerprint, examples, total), o.RendezvousTimeout, log)
            : null;
        try
        {
            return Train(o, manifest, model, examples, (micro, total), dp, log);
        }
        catch (Exception e) when (dp != null)
        {
            dp.Abort(e);                                                                       // the other ranks stop with this rank's message
            throw;
        }
    }

    private static TrainSummary Train(TrainOptions o, Manifest manifest, ModelConfig model, IReadOnlyList<Example> examples, (int Micro, long Total) size, DataParallel? dp, TextWriter log)
    {
        var (micro, total) = size;
        var adapterCfg = AdapterConfig.Load(Path.Combine(o.Artifacts, manifest.AdapterDir));
        var schedule = new LrSchedule(LrSchedule.ParseKind(o.LrScheduler), o.Lr, o.WarmupSteps, total);
        // data parallel: rank 0 alone reads the run folder (its checkpoint), then hands the starting point and the state to every rank
        var (start, position, init, m, v) = StartingPoint(dp is { Writes: false } ? o with { Resume = false } : o, manifest.Trainable, Path.Combine(o.Artifacts, manifest.AdapterDir), total, log);
        if (dp != null) (start, position) = dp.ShareStart(start, position);
        if (start > 0 && adapterCfg.LoraDropout > 0)
            log.WriteLine($"note: lora_dropout {adapterCfg.LoraDropout} draws from ONNX Runtime's own random generator, so this resumed run is not bit-identical to an uninterrupted one");
        var optimizer = new OptimizerOptions(new AdamWOptions(WeightDecay: o.WeightDecay), o.MaxGradNorm);
        if (o.CudaGraph) OrtRuntime.CheckCudaGraphs(o.Device, adapterCfg.LoraDropout);
        var settings = o.Ranks is { } me && o.Device == Device.Cuda ? o.Runtime with { CudaDevice = me.LocalRank } : o.Runtime;   // rank on cuda:LOCAL_RANK
        var rt = o.CudaGraph ? OrtRuntime.For(o.Device, settings).WithCudaGraphs() : OrtRuntime.For(o.Device, settings);
        using var runner = new StepRunner(rt, manifest, o.Artifacts, optimizer, init, m, v);
        dp?.ShareState(runner.State);
        var stream = new BatchStream(examples, new BatchOptions(o.BatchSize, micro, model.PadTokenId ?? 0, manifest.SeqLen, o.Shuffle, o.GroupByLength, o.Packing), position);
        var evalData = o.EvalData.Count > 0 && dp is not { Writes: false } ? LoadData(o, o.EvalData, manifest, model.VocabSize) : null;   // rank 0 evaluates
        var eval = evalData is null ? null : new BatchStream(evalData, new BatchOptions(micro, micro, model.PadTokenId ?? 0, manifest.SeqLen, Packing: o.Packing), DataPosition.Start(0));
        log.WriteLine($"training {examples.Count} records, {total} steps of {o.BatchSize} ({(o.Packing ? $"packed into rows, {micro} rows per micro-batch" : $"micro-batch {micro}")}, seq {manifest.SeqLen}) on {o.Device.ToString().ToLowerInvariant()}{(start > 0 ? $", resuming at step {start}" : "")}");
        using var metrics = dp is { Writes: false } ? null : new Metrics(o.Out, start, total, o.Quiet);
        using var signals = o.HandleSignals ? new StopSignals(log) : null;
        if (dp != null) dp.LocalStop = () => signals?.Requested ?? 0;                         // a stop is agreed at each step's reduction
        var ctx = new RunContext(o, runner, stream, schedule, adapterCfg, metrics, eval, total, model.VocabSize, signals, dp);
        return Loop(ctx, start, log);
    }

    /// <summary>What a run folder holds: a new run starts only in an empty one, or with --overwrite, which clears it.</summary>
    private static readonly string[] RunOutputs = ["metrics.jsonl", "checkpoints", "adapter"];

    internal static void Fresh(TrainOptions o)
    {
        var found = RunOutputs.Where(n => File.Exists(Path.Combine(o.Out, n)) || Directory.Exists(Path.Combine(o.Out, n))).ToArray();
        if (found.Length == 0) return;
        Fail.If(!o.Overwrite, $"{o.Out} already holds a run ({string.Join(", ", found)})",
            "continue it with --resume, start it again with --overwrite (which deletes it), or choose another --out");
        foreach (var n in found)
        {
            var path = Path.Combine(o.Out, n);
            if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
            else File.Delete(path);
        }
    }

    /// <summary>Steps after which an adapter that has not changed in any bit draws a warning.</summary>
    private const int FrozenWindow = 10;

    private static bool Unchanged(AdapterWeights before, AdapterWeights after) =>
        before.All(kv => after.TryGetValue(kv.Key, out var t) && kv.Value.Data.AsSpan().SequenceEqual(t.Data));

    private sealed record RunContext(TrainOptions O, StepRunner Runner, BatchStream Stream, LrSchedule Schedule, AdapterConfig Adapter, Metrics? Metrics, BatchStream? Eval, long Total,
        int VocabSize, StopSignals? Signals = null, DataParallel? Dp = null)
    {
        /// <summary>Whether this process writes metrics, checkpoints and the adapter (not a data-parallel rank other than 0).</summary>
        public bool Writes => Dp?.Writes ?? true;

        /// <summary>The signal (2 or 15) after which to stop: every rank's agreement under data parallelism, else this process's.</summary>
        public int Stop => Dp?.AgreedStop ?? Signals?.Requested ?? 0;

        /// <summary>The lm_loss above which a run counts as diverged: 4 · ln V, at least 20.</summary>
        public double DivergedAbove => Math.Max(20, 4 * Math.Log(VocabSize));
    }

    private static TrainSummary Loop(RunContext c, long start, TextWriter log)
    {
        var clock = Stopwatch.StartNew();
        double first = double.NaN, last = double.NaN;
        long tokens = 0, evaluated = -1;
        string? checkpoint = null;
        double[,]? load = null;
        var end = c.O.StopAfter is { } stop ? Math.Min(c.Total, start + stop) : c.Total;
        var initial = end - start >= FrozenWindow && c.Writes ? c.Runner.State.Download(c.Runner.State.Params) : null;
        for (var step = start; step < end; step++)
        {
            var lr = c.Schedule.At((int)step);
            var t0 = clock.Elapsed.TotalSeconds;
            var r = c.Runner.Step(c.Stream.NextStep(), step + 1, lr, c.Dp);
            if (!double.IsFinite(r.Loss) || !double.IsFinite(r.GradNorm)) StopNonFinite(c, step, r);
            if (step > start && r.LmLoss > c.DivergedAbove) StopDiverged(c, step, r, c.DivergedAbove);
            (first, last, tokens, load) = (double.IsNaN(first) ? r.Loss : first, r.Loss, tokens + r.Tokens, r.RouterLoad);
            c.Metrics?.Step(step, r, lr, clock.Elapsed.TotalSeconds - t0);
            if (initial != null && step == start + FrozenWindow - 1 && Unchanged(initial, c.Runner.State.Download(c.Runner.State.Params)))
                Console.Error.WriteLine($"warning: the adapter has not changed in {FrozenWindow} steps (loss {r.Loss:G7}): is --lr too small, or is every label masked?");
            var done = step + 1;
            if (c.O.SaveSteps > 0 && done % c.O.SaveSteps == 0 && done < end) checkpoint = Save(c, done) ?? checkpoint;
            if (c.Eval != null && c.O.EvalSteps > 0 && done % c.O.EvalSteps == 0)
            {
                RunEval(c, step);
                evaluated = step;
            }
            if (c.Stop > 0 && done < end) return Interrupted(c, start, done, first, last, tokens, clock, log);
        }
        if (c.Eval != null && evaluated != end - 1) RunEval(c, end - 1);
        c.Metrics?.Finish();
        checkpoint = Save(c, end);
        string? adapterDir = null;
        if (end == c.Total && c.Writes)
        {
            adapterDir = SaveAdapter(c.O, c.Adapter, c.Runner.State.Download(c.Runner.State.Params));
        }
        var summary = new TrainSummary(end - start, first, last, adapterDir, checkpoint, clock.Elapsed.TotalSeconds, tokens,
            c.Metrics?.Path ?? "", end, c.Total, load);
        TrainReport.Write(log, summary);
        return summary;
    }

    /// <summary>OUT/adapter, written beside it and renamed when complete; returns its path.</summary>
    internal static string SaveAdapter(TrainOptions o, AdapterConfig cfg, AdapterWeights trained)
    {
        var dir = Path.Combine(o.Out, "adapter");
        var formats = o.SaveBin ? AdapterWeightFormats.Both : AdapterWeightFormats.Safetensors;
        GraphBuilder.IO.AtomicFolder.Write(dir, "training", tmp =>
        {
            AdapterStore.Save(tmp, cfg, trained, formats);
            return tmp;
        });
        return dir;
    }

    /// <summary>A signal stopped the run after step <paramref name="done"/>: checkpoint it and say how to continue.</summary>
    private static TrainSummary Interrupted(RunContext c, long start, long done, double first, double last, long tokens, Stopwatch clock, TextWriter log)
    {
        c.Metrics?.Finish();
        var checkpoint = Save(c, done);
        log.WriteLine($"stopped at step {done} of {c.Total}; checkpoint {checkpoint}. Continue with the same command and --resume.");
        return new TrainSummary(done - start, first, last, null, checkpoint, clock.Elapsed.TotalSeconds, tokens, c.Metrics?.Path ?? "", done, c.Total)
        {
            StoppedBySignal = c.Stop,
        };
    }

    /// <summary>
    /// Stops on a non-finite loss or gradient and names the newest checkpoint whose weights are all finite
    /// (read back to check), or says there is none. Nothing is saved.
    /// </summary>
    private static void StopNonFinite(RunContext c, long step, StepResult r)
    {
        c.Metrics?.Finish();
        var lossBad = !double.IsFinite(r.Loss);
        var what = lossBad ? $"the loss became {r.Loss}" : $"the gradient norm became {r.GradNorm} (loss {r.Loss:G6})";
        var keep = NewestFinite(c.O.Out);
        var where = keep != null ? $"the newest checkpoint with finite weights is {keep}" : "no checkpoint with finite weights was saved before it (use --save-steps N to keep some)";
        // step 0 of a new run is the forward of the initial weights, before any update: the learning rate is not the cause
        // (the base weights were checked finite as they were loaded)
        var fix = step == 0 && !c.O.Resume
            ? "the first step ran before any update, so --lr is not the cause: check the adapter's initial weights and, with float16 graphs, rebuild them with --dtype bfloat16"
            : "lower --lr or set --max-grad-norm, then start again (or --resume from the checkpoint)";
        throw Fail.User($"{what} at step {step}; training stopped and {where}", fix);
    }

    /// <summary>The newest checkpoint whose adapter parameters are all finite (its adapter read back, not its moments), or null.</summary>
    internal static string? NewestFinite(string outDir) =>
        Checkpoints.All(outDir).Reverse().FirstOrDefault(d => AdapterWeights.Load(Path.Combine(d, "adapter")).Values.All(t => t.Data.All(float.IsFinite)));

    /// <summary>
    /// A finite loss far above what guessing uniformly over the vocabulary gives (4 · ln V, at least 20) after the
    /// first step means the run diverged (e.g. --lr far too high): stop rather than train to the end on exploded weights.
    /// </summary>
    private static void StopDiverged(RunContext c, long step, StepResult r, double bound)
    {
        c.Metrics?.Finish();
        var keep = NewestFinite(c.O.Out);
        throw Fail.User($"the loss {r.Loss:G4} at step {step} is above {bound:G3} (4·ln of the vocabulary): training diverged and stopped"
            + (keep != null ? $"; the newest checkpoint with finite weights is {keep}" : ""), "lower --lr or set --max-grad-norm, then start again");
    }

    private static void RunEval(RunContext c, long step)
    {
        var (loss, lm, _) = c.Runner.Eval(c.Eval!.All());                                     // every eval record once
        c.Metrics?.Eval(step, loss, lm);
    }

    /// <summary>A checkpoint after step <paramref name="done"/> (its folder), or null on a data-parallel rank other than 0.</summary>
    private static string? Save(RunContext c, long done)
    {
        if (!c.Writes) return null;
        var s = c.Runner.State;
        var info = new CheckpointInfo(done, c.Stream.Position.ToJson(), c.O.Seed, c.O.LrScheduler, c.O.Lr, c.O.WarmupSteps, c.Total);
        return Checkpoints.Save(c.O.Out, info, c.Adapter, s.Download(s.Params), s.Download(s.M), s.Download(s.V));
    }

    internal static (long Start, DataPosition Position, AdapterWeights Init, AdapterWeights? M, AdapterWeights? V) StartingPoint(
        TrainOptions o, IReadOnlyList<TensorSpec> trainableSpecs, string adapterInit, long total, TextWriter log)
    {
        if (o.Resume && Checkpoints.Latest(o.Out) is { } dir)
        {
            var (info, p, m, v) = Checkpoints.Load(dir);
            var position = Checkpoints.Position(info);
            Fail.If(o.Shuffle && position.Seed != o.Seed, $"--resume: the checkpoint {dir} was trained with --seed {position.Seed}, not {o.Seed}",
                $"pass --seed {position.Seed} to continue the same data order");
            Fail.If(info.Step > total, $"--resume: the checkpoint {dir} is at step {info.Step}, past the {total} steps asked for", "ask for more --steps");
            var same = info.Lr == o.Lr && info.Schedule == o.LrScheduler && info.WarmupSteps == o.WarmupSteps && info.TotalSteps == total;
            if (!same)
            {
                log.WriteLine($"note: the checkpoint's schedule was {info.Schedule} lr {info.Lr} warmup {info.WarmupSteps} over {info.TotalSteps} steps; "
                    + $"continuing with {o.LrScheduler} lr {o.Lr} warmup {o.WarmupSteps} over {total} (not an exact continuation)");
            }
            return (info.Step, position, p, m, v);
        }
        Fail.If(o.Resume, $"--resume: {o.Out} has no checkpoint", "start without --resume, or point --out at an earlier run");
        var trainable = trainableSpecs.Select(t => new TrainableTensor(t.Name, t.Shape, Init.Zeros)).ToArray();
        return (0, DataPosition.Start(o.Seed), AdapterStore.CheckedLoad(adapterInit, trainable), null, null);
    }

    internal static IReadOnlyList<Example> LoadData(TrainOptions o, IReadOnlyList<DataSource> sources, Manifest manifest, int vocab)
    {
        var spec = new DatasetSpec(sources)
        {
            CutoffLen = o.CutoffLen,
            TrainOnInputs = o.TrainOnInputs,
            MaxSequenceLength = manifest.SeqLen,
            Template = o.Template == "plain" ? InstructionTemplate.Plain : InstructionTemplate.Alpaca,
        };
        var tokenizer = new LazyTokenizer(() => o.Tokenizer is { } t
            ? (File.Exists(t) ? HfTokenizer.Load(t) : HfTokenizer.FromDirectory(t))
            : HfTokenizer.FromDirectory(manifest.ModelPath));
        var examples = DatasetLoader.Load(spec, tokenizer);
        CheckIds(examples, vocab);
        return examples;
    }

    /// <summary>One warning line when records carry no label token (all −100 after the shift): they add nothing to the loss.</summary>
    internal static void WarnMaskedRecords(IReadOnlyList<Example> examples, TextWriter log)
    {
        var masked = examples.Where(e => e.Labels.Skip(1).All(l => l == Example.IgnoreIndex)).ToArray();
        if (masked.Length == 0) return;
        log.WriteLine($"warning: {masked.Length} of {examples.Count} records have no label tokens (every label is −100; first: {masked[0].Source}), so they add nothing to the loss"
            + " — check the template and --cutoff-len, or pass --train-on-inputs");
    }

    /// <summary>Token ids outside the vocabulary would index past the embedding inside ORT: refuse them first, naming the record.</summary>
    private static void CheckIds(IReadOnlyList<Example> examples, int vocab)
    {
        foreach (var e in examples)
        {
            var bad = Array.FindIndex(e.InputIds, id => id < 0 || id >= vocab);
            if (bad >= 0)
                throw Fail.User($"{e.Source}: input_ids[{bad}] = {e.InputIds[bad]} is outside the model's vocabulary of {vocab} tokens",
                    "tokenize with this model's tokenizer (mixlora-data tokenize), or fix the record");
        }
    }

    internal static void CheckModel(Manifest m, string artifacts)
    {
        if (!Directory.Exists(m.ModelPath)) throw Fail.User($"the model folder {m.ModelPath} named in {artifacts}/manifest.json is gone", "rebuild the artifacts with --model pointing at the model");
        var now = ModelConfig.Fingerprint(m.ModelPath);
        if (now != m.ModelFingerprint) throw Fail.User($"{m.ModelPath} changed since the artifacts in {artifacts} were built (fingerprint mismatch)", "rebuild them with bin/mixlora-build-graph");
    }
}

/// <summary>Loads the tokenizer only if some data needs it (pre-tokenized files do not).</summary>
internal sealed class LazyTokenizer(Func<ITokenizer> load) : ITokenizer
{
    private readonly Lazy<ITokenizer> _t = new(load);
    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = true) => _t.Value.Encode(text, addSpecialTokens);
    public string Decode(IReadOnlyList<int> ids, bool skipSpecialTokens = false) => _t.Value.Decode(ids, skipSpecialTokens);
    public int VocabSize => _t.Value.VocabSize;
    public int? BosId => _t.Value.BosId;
    public int? EosId => _t.Value.EosId;
    public int? PadId => _t.Value.PadId;
}
