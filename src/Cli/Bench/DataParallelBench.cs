using System.Diagnostics;
using System.Globalization;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.GraphBuilder.Optim;
using MixLoRA.Runtime;
using MixLoRA.Runtime.Collectives;
using MixLoRA.Runtime.Kernels;
using MixLoRA.Trainer.Data;
using MixLoRA.Trainer.Distributed;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Cli.Bench;

/// <summary>
/// `mixlora-bench --nproc N` (or one rank under torchrun's variables): every rank builds the bench's grad step
/// (`--batch` rows) on its device (cuda:LOCAL_RANK), and a step is N micro-batches, one per rank, summed through the
/// collective before the optimizer, as `mixlora-train --nproc` runs it. Timed alike on every rank, after the warm-up:
/// first `--steps` steps of each rank's own micro-batch alone (what one GPU does, all GPUs busy at once: the solo
/// tokens/s, averaged over the ranks), then `--steps` data-parallel steps. tokens_per_s is the group's (N·B·T a step),
/// scaling_efficiency = tokens_per_s / (N · solo tokens/s); MFU is over N devices' peak. Rank 0 prints the line.
/// </summary>
public static class DataParallelBench
{
    public static BenchResult Run(BenchOptions o, RankInfo me, TimeSpan timeout, TextWriter log)
    {
        Fail.If(o.Lengths != null || o.Profile != null, "--nproc (or WORLD_SIZE) with --lengths or --profile", "time data parallelism on full rows, without profiles");
        var clock = Stopwatch.StartNew();
        var preset = BenchModels.Resolve(o.Config);
        var (seq, batch) = (o.SeqLen ?? preset.SeqLen, o.Batch ?? preset.Batch);
        var dtype = o.DType ?? (o.Device == Device.Cpu ? DType.Float32 : DType.BFloat16);
        var adapter = BenchModels.Adapter(o.Adapter);
        var fused = FusedKernels.For(o.Fused, o.Device, dtype, log);
        var spec = new TrainSpec(preset.Model, adapter, new Shapes(batch, seq), dtype, dtype, Checkpointing: o.GradientCheckpointing, Fused: fused);
        var grad = TrainGraphs.GradStep(spec);
        var bytes = OnnxWriter.ToBytes(grad.Graph);
        var manifest = ArtifactsBuilder.Describe(spec, new Dictionary<string, CompiledGraph> { ["grad_step"] = grad }, o.Device) with { ModelPath = "(random weights)" };
        var parameters = ParameterCount.Of(grad, preset.Model, adapter);
        var description = string.Create(CultureInfo.InvariantCulture, $"bench={preset.Name}\nmethod={o.Adapter.Method}\nseq={seq}\nbatch={batch}\ndtype={dtype.Name()}\nsteps={o.Steps}\nwarmup={o.Warmup}\nsettings={o.Adapter}");
        using var dp = DataParallel.Join(me, o.Device, description, timeout, log);
        StepRunner? runner = null;
        var memory = PeakMemory.For(o.Device, () => runner?.DeviceBytes ?? 0);
        var rt = OrtRuntime.For(o.Device, o.Device == Device.Cuda ? o.Runtime with { CudaDevice = me.LocalRank } : o.Runtime);
        if (o.CudaGraph) rt = rt.WithCudaGraphs();
        var init = AdapterStore.Initialize(grad.Trainable, o.Seed);
        using (runner = new StepRunner(rt, manifest, name => name == "grad_step" ? bytes : throw Fail.Bug($"the bench has no {name} graph"), new RandomWeights((ulong)o.Seed),
            new OptimizerOptions(new AdamWOptions(), MaxGradNorm: 1.0), init, optimizerChunk: o.OptimizerChunk))
        {
            dp.ShareState(runner.State);
            var micro = Enumerable.Range(0, me.WorldSize).Select(i => BenchRunner.RandomBatch(batch, seq, preset.Model.VocabSize, o.Seed + i)).ToArray();
            var (solo, together, lastLoss, setup) = Time(o, runner, dp, micro, memory, clock, log);
            var soloPerRank = dp.Collective.AllReduceSum([(double)batch * seq / (solo.Average() / 1000)])[0] / me.WorldSize;
            var result = BenchRunner.Result(o, preset, adapter, (seq, batch * me.WorldSize, dtype), together, memory, runner.DeviceBytes, parameters, setup, lastLoss);
            var peak = result.PeakTflops * me.WorldSize;
            return result with
            {
                FusedKernels = FusedOpNames.Of(fused), CudaGraph = o.CudaGraph, PeakTflops = peak, Mfu = peak is { } p ? result.AchievedTflops / p : null,
                WorldSize = me.WorldSize, SoloTokensPerS = soloPerRank, ScalingEfficiency = result.TokensPerS / (me.WorldSize * soloPerRank),
            };
        }
    }

    /// <summary>Warm-up (data parallel), then the solo steps and the data-parallel steps, each started together on every rank.</summary>
    private static (double[] Solo, double[] Together, double LastLoss, double Setup) Time(BenchOptions o, StepRunner runner, DataParallel dp, Batch[] micro, PeakMemory memory, Stopwatch clock, TextWriter log)
    {
        long step = 1;
        var watch = memory.Watch();
        for (var i = 0; i < o.Warmup; i++) runner.Step(micro, step++, 1e-4, dp);
        if (o.Warmup > 0) watch.Dispose();
        memory.Sample();
        var setup = clock.Elapsed.TotalSeconds;
        log.WriteLine($"setup + {o.Warmup} warm-up steps: {setup:F1}s; timing {o.Steps} steps of each rank alone, then {o.Steps} data-parallel steps over {dp.WorldSize} ranks");
        Batch[] own = [micro[dp.Rank]];
        var (solo, together) = (new double[o.Steps], new double[o.Steps]);
        var lastLoss = double.NaN;
        foreach (var (times, shared) in new[] { (solo, false), (together, true) })
        {
            if (shared) dp.ShareState(runner.State);                                       // the solo steps moved each rank's copy its own way
            dp.Collective.Barrier();
            for (var i = 0; i < o.Steps; i++)
            {
                var t0 = Stopwatch.GetTimestamp();
                lastLoss = shared ? runner.Step(micro, step++, 1e-4, dp).Loss : runner.Step(own, step++, 1e-4).Loss;
                times[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            }
        }
        watch.Dispose();
        memory.Sample();
        return (solo, together, lastLoss, setup);
    }
}
