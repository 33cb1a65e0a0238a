using System.Diagnostics;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Optim;
using MixLoRA.Runtime;
using MixLoRA.Trainer.Data;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Trainer.Jobs;

/// <summary>`mixlora-train --artifacts DIR --jobs jobs.json`: what applies to all the jobs.</summary>
public sealed record JobsOptions(string Artifacts, string JobsFile, Device Device = Device.Cpu, bool Quiet = false, bool Resume = false, bool Overwrite = false)
{
    /// <summary>The runtime settings read at start-up (environment), passed explicitly.</summary>
    public RuntimeSettings Runtime { get; init; } = RuntimeSettings.Default;

    /// <summary>Stop every job after this many optimizer steps of this run (tests of resumed jobs).</summary>
    public int? StopAfter { get; init; }
}

/// <summary>How each job ended: its summary, or the one-line error that stopped it.</summary>
public sealed record JobOutcome(string Name, TrainSummary? Summary, string? Error);

/// <summary>
/// Several jobs trained at once over one frozen base (<see cref="JobsRunner"/>): each combined micro-step holds the
/// next micro-batch of every running job; a job whose step is complete runs its own optimizer, metrics, checkpoints,
/// eval and final adapter exactly as `mixlora-train` writes them for a single run. A job that finishes leaves empty
/// rows; a job whose data or loss fails stops with its own error line and the others go on.
/// </summary>
public static class JobsLoop
{
    public static IReadOnlyList<JobOutcome> Run(JobsOptions o, TextWriter? log = null)
    {
        log ??= o.Quiet ? TextWriter.Null : Console.Out;
        var manifest = Manifest.Load(o.Artifacts);
        var specs = JobsFile.Load(o.JobsFile);
        var built = manifest.Jobs ?? throw Fail.User($"{o.Artifacts} was built for one adapter, not for jobs", $"rebuild it with bin/mixlora-build-graph --jobs {o.JobsFile}");
        Fail.If(!built.Select(j => j.Name).SequenceEqual(specs.Select(s => s.Name)),
            $"{o.JobsFile} names the jobs {string.Join(", ", specs.Select(s => s.Name))} but {o.Artifacts} was built for {string.Join(", ", built.Select(j => j.Name))}",
            $"rebuild with bin/mixlora-build-graph --jobs {o.JobsFile}");
        TrainLoop.CheckModel(manifest, o.Artifacts);
        var model = ModelConfig.Load(manifest.ModelPath);
        var runs = specs.Select((s, j) => JobRun.Open(s, j, o, manifest, model, log)).ToArray();
        try
        {
            // a job that failed before it started keeps its rows empty; its state is the initial adapter, never updated
            var starts = runs.Select(r => r.Start ?? (new OptimizerOptions(new AdamWOptions()), Initial(o.Artifacts, manifest.Jobs![r.Index]), null, null)).ToArray();
            using var runner = new JobsRunner(OrtRuntime.For(o.Device, o.Runtime), manifest, o.Artifacts, starts);
            log.WriteLine($"training {runs.Count(r => r.Active)} jobs ({string.Join(", ", runs.Select(r => r.Describe()))}), {manifest.MicroBatchSize} rows each per micro-step, seq {manifest.SeqLen} on {o.Device.ToString().ToLowerInvariant()}");
            Loop(runner, runs, o, log, active => Graphs(o.Artifacts, manifest, model, active));
        }
        finally
        {
            foreach (var r in runs) r.Dispose();
        }
        foreach (var r in runs.Where(r => r.Error != null)) Console.Error.WriteLine($"error: job {r.Name}: {r.Error}");
        return runs.Select(r => new JobOutcome(r.Name, r.Summary, r.Error)).ToArray();
    }

    private static AdapterWeights Initial(string artifacts, JobManifest job) =>
        AdapterStore.CheckedLoad(Path.Combine(artifacts, job.AdapterDir), job.Trainable.Select(t => new TrainableTensor(t.Name, t.Shape, Init.Zeros)).ToArray());

    /// <summary>The jobs graphs for the <paramref name="active"/> jobs alone, compiled as build-graph compiles them.</summary>
    private static Func<string, byte[]> Graphs(string artifacts, Manifest m, ModelConfig model, IReadOnlyList<int> active)
    {
        var adapters = active.Select(i => new JobAdapter(m.Jobs![i].Name, AdapterConfig.Load(Path.Combine(artifacts, m.Jobs[i].AdapterDir)))).ToArray();
        var spec = new JobsSpec(model, adapters, new GraphBuilder.Graphs.Shapes(m.MicroBatchSize, m.SeqLen), DTypes.Parse(m.WeightDType), DTypes.Parse(m.ComputeDType),
            Accumulate: true, Checkpointing: m.Checkpointing, Fused: m.Fused);
        var grad = OnnxWriter.ToBytes(JobsGraphs.GradStep(spec).Graph);
        var eval = new Lazy<byte[]>(() => OnnxWriter.ToBytes(JobsGraphs.EvalStep(spec).Graph));
        return name => name == "grad_accum_step" ? grad : eval.Value;
    }

    private static void Loop(JobsRunner runner, JobRun[] runs, JobsOptions o, TextWriter log, Func<IReadOnlyList<int>, Func<string, byte[]>> graphs)
    {
        var clock = Stopwatch.StartNew();
        var holding = runs.Length;
        while (runs.Any(r => r.Active))
        {
            var active = runs.Where(r => r.Active).Select(r => r.Index).ToArray();
            if (active.Length < holding)
            {
                // finished or failed jobs leave the graph: it is rebuilt for the others, whose state stays on the device
                var t0 = clock.Elapsed.TotalSeconds;
                runner.Shrink(active, graphs(active));
                holding = active.Length;
                if (!o.Quiet) log.WriteLine($"\nnow training {string.Join(", ", active.Select(i => runs[i].Name))} (graph rebuilt in {clock.Elapsed.TotalSeconds - t0:F1}s)");
            }
            var blocks = new Batch?[runs.Length];
            var shares = new (double, double)[runs.Length];
            var first = new bool[runs.Length];
            foreach (var r in runs.Where(r => r.Active)) (blocks[r.Index], shares[r.Index], first[r.Index]) = r.NextMicro(clock);
            var results = runner.Run(blocks, shares, first);
            foreach (var r in runs.Where(r => r.Active))
            {
                if (!r.Add(results[r.Index]!)) continue;
                var gradNorm = runner.Optimize(r.Index, r.StepIndex + 1, r.Lr);
                r.FinishStep(runner, gradNorm, clock, o.StopAfter);
            }
            if (!o.Quiet) log.Write($"\r{string.Join(" | ", runs.Select(r => r.Progress()))}   ");
        }
        if (!o.Quiet) log.WriteLine();
        foreach (var r in runs.Where(r => r.Summary != null)) TrainReport.Write(log, r.Summary!);
    }
}
