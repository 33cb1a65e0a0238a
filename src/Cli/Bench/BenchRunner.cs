using System.Diagnostics;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.GraphBuilder.Optim;
using MixLoRA.Runtime;
using MixLoRA.Runtime.Kernels;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Data;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Cli.Bench;

/// <summary>
/// `mixlora-bench`: the grad step of <see cref="TrainGraphs"/> and the optimizer graph through the same
/// <see cref="StepRunner"/> as `mixlora-train`, on random frozen weights of a model shape, one micro-batch of
/// random tokens per optimizer step; warm-up steps, then timed steady-state steps.
/// </summary>
public static class BenchRunner
{
    /// <summary>H100 SXM dense bf16/fp16 tensor-core peak, TFLOP/s.</summary>
    public const double H100PeakTflops = 989.4;

    public static BenchResult Run(BenchOptions o, TextWriter? log = null)
    {
        log ??= TextWriter.Null;
        var clock = Stopwatch.StartNew();
        var preset = BenchModels.Resolve(o.Config);
        var (seq, batch) = (o.SeqLen ?? preset.SeqLen, o.Batch ?? preset.Batch);
        var dtype = o.DType ?? (o.Device == Device.Cpu ? DType.Float32 : DType.BFloat16);
        Check(o, seq, batch, dtype);
        var adapter = BenchModels.Adapter(o.Adapter);
        var fused = FusedKernels.For(o.Fused, o.Device, dtype, log);
        var spec = new TrainSpec(preset.Model, adapter, new Shapes(batch, seq), dtype, dtype, Checkpointing: o.GradientCheckpointing, Fused: fused);
        var grad = TrainGraphs.GradStep(spec);
        var bytes = OnnxWriter.ToBytes(grad.Graph);
        var manifest = ArtifactsBuilder.Describe(spec, new Dictionary<string, CompiledGraph> { ["grad_step"] = grad }, o.Device) with { ModelPath = "(random weights)" };
        var parameters = ParameterCount.Of(grad, preset.Model, adapter);
        log.WriteLine($"{preset.Name} {o.Adapter.Method}: grad_step {grad.Graph.Nodes.Length} nodes, {parameters.Trainable:N0} trainable / {parameters.Frozen:N0} frozen parameters");

        StepRunner? runner = null;
        var memory = PeakMemory.For(o.Device, () => runner?.DeviceBytes ?? 0);
        var rt = OrtRuntime.For(o.Device, o.Runtime);
        if (o.CudaGraph) rt = rt.WithCudaGraphs();
        if (o.Profile != null) rt = rt.WithProfiling(o.Profile);
        var optimizer = new OptimizerOptions(new AdamWOptions(), MaxGradNorm: 1.0);
        var init = AdapterStore.Initialize(grad.Trainable, o.Seed);
        double[] times;
        double lastLoss;
        LengthResult? real = null;
        double setup;
        long deviceBytes;
        using (runner = new StepRunner(rt, manifest, name => name == "grad_step" ? bytes : throw Fail.Bug($"the bench has no {name} graph"), new RandomWeights((ulong)o.Seed), optimizer, init, optimizerChunk: o.OptimizerChunk))
        {
            var micro = new[] { RandomBatch(batch, seq, preset.Model.VocabSize, o.Seed) };
            long step = 1;
            // peaks live inside runs: memory is watched through the warm-up steps (the same graph as the timed
            // ones), so the sampler does not share the CPU with timed steps; without warm-up, through the timing
            var watch = memory.Watch();
            for (var i = 0; i < o.Warmup; i++) runner.Step(micro, step++, 1e-4);
            if (o.Warmup > 0) watch.Dispose();
            memory.Sample();
            setup = clock.Elapsed.TotalSeconds;
            log.WriteLine($"setup + {o.Warmup} warm-up steps: {setup:F1}s; timing {o.Steps} steps");
            times = new double[o.Steps];
            lastLoss = double.NaN;
            for (var i = 0; i < o.Steps; i++)
            {
                var t0 = Stopwatch.GetTimestamp();
                lastLoss = runner.Step(micro, step++, 1e-4).Loss;
                times[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            }
            watch.Dispose();
            memory.Sample();
            deviceBytes = runner.DeviceBytes;
            if (o.Lengths is { } lengths)
            {
                log.WriteLine($"timing {o.Steps} padded and {o.Steps} packed steps of {lengths.Name} lengths");
                real = LengthBench.Run(runner, lengths, batch, seq, preset.Model.VocabSize, o.Steps, o.Warmup, o.Seed);
            }
        }
        if (o.Profile != null) ProfileSummary.Report(o.Profile, log);
        return Result(o, preset, adapter, (seq, batch, dtype), times, memory, deviceBytes, parameters, setup, lastLoss) with
        {
            FusedKernels = FusedOpNames.Of(fused), CudaGraph = o.CudaGraph, Lengths = o.Lengths?.Name,
            PaddedRealTokensPerS = real?.PaddedRealTokensPerS, PaddedPaddingFraction = real?.PaddedPaddingFraction,
            PackedRealTokensPerS = real?.PackedRealTokensPerS, PackedPaddingFraction = real?.PackedPaddingFraction,
        };
    }

    private static void Check(BenchOptions o, int seq, int batch, DType dtype)
    {
        Fail.If(seq < 2, $"--seq-len {seq} is too short", "use at least 2");
        Fail.If(batch < 1, $"--batch {batch} must be positive", "use 1 or more");
        Fail.If(o.Steps < 1, $"--steps {o.Steps} must be positive", "time at least one step");
        Fail.If(o.Warmup < 0, $"--warmup {o.Warmup} is negative", "use 0 or more warm-up steps");
        Fail.If(!dtype.IsFloat() || dtype == DType.Float64, $"--dtype {dtype.Name()} is not a training dtype", "use bfloat16, float16 or float32");
        Fail.If(o.Device == Device.Cpu && dtype != DType.Float32, $"--dtype {dtype.Name()} on the CPU", "the CPU provider computes in float32: use --dtype float32, or --device cuda");
        if (o.CudaGraph) OrtRuntime.CheckCudaGraphs(o.Device, o.Adapter.Dropout);
        Fail.If(o.PeakTflops is <= 0, $"--peak-tflops {o.PeakTflops} must be positive", "give the device's dense peak, e.g. 989 for an H100 SXM in bf16");
    }

    /// <summary>Every position a real token with a loss: B·T tokens per step.</summary>
    public static Batch RandomBatch(int b, int t, int vocab, int seed)
    {
        var rng = new Random(seed);
        var ids = new long[b * t];
        for (var i = 0; i < ids.Length; i++) ids[i] = rng.Next(vocab);
        return new Batch(ids, Enumerable.Repeat(1L, ids.Length).ToArray(), (long[])ids.Clone(), b, t, Enumerable.Range(0, b).ToArray());
    }

    internal static BenchResult Result(BenchOptions o, BenchPreset preset, GraphBuilder.Adapters.AdapterConfig adapter, (int Seq, int Batch, DType DType) shape,
        double[] times, PeakMemory memory, long deviceBytes, ParameterCount parameters, double setup, double lastLoss)
    {
        var sorted = times.Order().ToArray();
        var median = sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
        var mean = times.Average();
        var tokens = (long)shape.Seq * shape.Batch;
        var tokensPerS = tokens / (mean / 1000);
        var flops = FlopModel.PerToken(preset.Model, parameters, shape.Seq);
        var achieved = flops * tokensPerS / 1e12;
        var peak = o.PeakTflops ?? (o.Device == Device.Cuda && shape.DType is DType.BFloat16 or DType.Float16 ? H100PeakTflops : null);
        return new BenchResult
        {
            Config = preset.Name, Method = o.Adapter.Method, Device = o.Device.ToString().ToLowerInvariant(), DType = shape.DType.Name(),
            SeqLen = shape.Seq, Batch = shape.Batch, R = adapter.R, LoraAlpha = adapter.LoraAlpha,
            Experts = adapter.NumExperts > 0 ? adapter.NumExperts : null, TopK = adapter.TopK > 0 ? adapter.TopK : null, Dropout = adapter.LoraDropout,
            GradientCheckpointing = o.GradientCheckpointing ? "on" : "off",
            WarmupSteps = o.Warmup, Steps = o.Steps, TokensPerStep = tokens, TokensPerS = tokensPerS,
            MsPerStepMedian = median, MsPerStepMean = mean, MsPerStepMin = sorted[0],
            PeakMemoryBytes = memory.PeakBytes, PeakMemorySource = memory.Source, DeviceStateBytes = deviceBytes,
            Parameters = parameters, FlopsPerToken = flops, AchievedTflops = achieved,
            PeakTflops = peak, Mfu = peak is { } p ? achieved / p : null, SetupS = setup, LastLoss = lastLoss,
        };
    }
}
