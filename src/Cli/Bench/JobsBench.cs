using System.Diagnostics;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.GraphBuilder.Optim;
using MixLoRA.Runtime;
using MixLoRA.Runtime.Kernels;
using MixLoRA.Trainer.Data;
using MixLoRA.Trainer.Jobs;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Cli.Bench;

/// <summary>
/// `mixlora-bench --jobs N`: N copies of the preset's adapter trained at once over one frozen base (<see cref="JobsRunner"/>),
/// `--batch` rows per job, one micro-batch of random full rows per job per step, each job's own clip + AdamW. Tokens/s
/// counts every job's tokens (aggregate); per job it is that over N. Peak memory as the single bench measures it.
/// </summary>
public static class JobsBench
{
    public static BenchResult Run(BenchOptions o, int jobs, TextWriter log)
    {
        var clock = Stopwatch.StartNew();
        var preset = BenchModels.Resolve(o.Config);
        var (seq, batch) = (o.SeqLen ?? preset.SeqLen, o.Batch ?? preset.Batch);
        var dtype = o.DType ?? (o.Device == Device.Cpu ? DType.Float32 : DType.BFloat16);
        Fail.If(jobs < 1, $"--jobs {jobs} must be positive", "use 1 or more");
        Fail.If(o.CudaGraph || o.Lengths != null, "--jobs with --cuda-graph or --lengths", "time jobs on full rows without CUDA graphs");
        var adapter = BenchModels.Adapter(o.Adapter);
        var fused = FusedKernels.For(o.Fused, o.Device, dtype, log);
        var spec = new JobsSpec(preset.Model, Enumerable.Range(0, jobs).Select(j => new JobAdapter($"job{j}", adapter)).ToArray(), new Shapes(batch, seq),
            dtype, dtype, Accumulate: true, Checkpointing: o.GradientCheckpointing, Fused: fused);
        var grad = JobsGraphs.GradStep(spec);
        var bytes = OnnxWriter.ToBytes(grad.Graph);
        var manifestJobs = spec.Jobs.Select((j, i) => new JobManifest(j.Name, "", grad.Trainable[i].Select(t => new TensorSpec(t.Key, "float32", t.Shape)).ToArray())).ToArray();
        var manifest = JobsArtifacts.Describe(spec, new Dictionary<string, CompiledJobs> { ["grad_accum_step"] = grad }, o.Device, manifestJobs);
        var single = new CompiledGraph(grad.Graph, grad.Trainable[0], grad.Weights);
        var parameters = ParameterCount.Of(single, preset.Model, adapter) is var p ? p with { Trainable = p.Trainable * jobs, TrainableActive = p.TrainableActive * jobs } : null!;
        log.WriteLine($"{preset.Name} {jobs} × {o.Adapter.Method}: jobs grad step {grad.Graph.Nodes.Length} nodes, {parameters.Trainable:N0} trainable parameters in all");

        JobsRunner? runner = null;
        var memory = PeakMemory.For(o.Device, () => runner?.DeviceBytes ?? 0);
        var rt = OrtRuntime.For(o.Device, o.Runtime);
        var starts = grad.Trainable.Select((t, j) => (new OptimizerOptions(new AdamWOptions(), MaxGradNorm: 1.0), AdapterStore.Initialize(t, o.Seed + j), (GraphBuilder.Adapters.AdapterWeights?)null, (GraphBuilder.Adapters.AdapterWeights?)null)).ToArray();
        double[] times;
        double setup, lastLoss = double.NaN;
        long deviceBytes;
        using (runner = new JobsRunner(rt, manifest, name => name == "grad_accum_step" ? bytes : throw Fail.Bug($"the bench has no {name} graph"), new RandomWeights((ulong)o.Seed), starts))
        {
            var blocks = Enumerable.Range(0, jobs).Select(j => (Batch?)BenchRunner.RandomBatch(batch, seq, preset.Model.VocabSize, o.Seed + j)).ToArray();
            var shares = Enumerable.Repeat((1.0, 1.0), jobs).ToArray();
            var first = Enumerable.Repeat(true, jobs).ToArray();
            long step = 1;
            double Step()
            {
                var r = runner.Run(blocks, shares, first);
                for (var j = 0; j < jobs; j++) runner.Optimize(j, step, 1e-4);
                step++;
                return r[0]!.Loss;
            }
            var watch = memory.Watch();
            for (var i = 0; i < o.Warmup; i++) Step();
            if (o.Warmup > 0) watch.Dispose();
            memory.Sample();
            setup = clock.Elapsed.TotalSeconds;
            log.WriteLine($"setup + {o.Warmup} warm-up steps: {setup:F1}s; timing {o.Steps} steps");
            times = new double[o.Steps];
            for (var i = 0; i < o.Steps; i++)
            {
                var t0 = Stopwatch.GetTimestamp();
                lastLoss = Step();
                times[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            }
            watch.Dispose();
            memory.Sample();
            deviceBytes = runner.DeviceBytes;
        }
        var result = BenchRunner.Result(o, preset, adapter, (seq, batch * jobs, dtype), times, memory, deviceBytes, parameters, setup, lastLoss);
        return result with { FusedKernels = FusedOpNames.Of(fused), Jobs = jobs, PerJobTokensPerS = result.TokensPerS / jobs };
    }
}
