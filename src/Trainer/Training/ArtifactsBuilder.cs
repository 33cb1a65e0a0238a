using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;

namespace MixLoRA.Trainer.Training;

/// <summary>What `mixlora-build-graph` compiles.</summary>
/// <param name="Checkpointing">recompute each decoder layer in the backward (activation checkpointing: less memory, ~1 more forward).</param>
/// <param name="Fused">the fused ops wanted (<see cref="FusedOps.None"/> with --no-fused-kernels); the graphs use those the device has for the dtype (<see cref="Runtime.Kernels.FusedKernels.For"/>).</param>
public sealed record BuildOptions(string ModelDir, string Adapter, string OutDir, int SeqLen = 512, int MicroBatch = 1, DType DType = DType.Float32, Device Device = Device.Cpu, int Seed = 42, bool Checkpointing = false, FusedOps Fused = FusedOps.All);

/// <summary>
/// Writes an artifacts folder: `grad_step.onnx` (first micro-batch), `grad_accum_step.onnx` (adds into
/// `.grad.acc`), `eval_step.onnx`, `adapter_init/` (the starting adapter) and `manifest.json`.
/// </summary>
public static class ArtifactsBuilder
{
    public static Manifest Build(BuildOptions o, TextWriter? log = null)
    {
        if (!Directory.Exists(o.ModelDir)) throw Fail.User($"model folder '{o.ModelDir}' does not exist", "pass --model with a Hugging Face model folder (config.json + *.safetensors)");
        var cfg = ModelConfig.Load(o.ModelDir);
        var adapterCfg = AdapterConfig.Load(o.Adapter);
        Fail.If(o.SeqLen < 2, $"--seq-len {o.SeqLen} is too short", "use at least 2");
        Fail.If(o.MicroBatch < 1, $"--micro-batch-size {o.MicroBatch} must be positive", "use 1 or more");
        Fail.If(o.Device == Device.Cpu && o.DType != DType.Float32, $"--dtype {o.DType.Name()} on the CPU", "the CPU provider computes in float32: use --dtype float32, or --device cuda");
        // the folder appears only when complete: written beside it and renamed over it (a failure leaves the old one)
        return GraphBuilder.IO.AtomicFolder.Write(o.OutDir, "mixlora-build-graph", tmp => Emit(o with { OutDir = tmp }, cfg, adapterCfg, log));
    }

    private static Manifest Emit(BuildOptions o, ModelConfig cfg, AdapterConfig adapterCfg, TextWriter? log)
    {
        Directory.CreateDirectory(o.OutDir);
        var fused = Runtime.Kernels.FusedKernels.For(o.Fused, o.Device, o.DType, log);
        var spec = new TrainSpec(cfg, adapterCfg, new Shapes(o.MicroBatch, o.SeqLen), o.DType, o.DType, Checkpointing: o.Checkpointing, Fused: fused);
        var graphs = new Dictionary<string, CompiledGraph>
        {
            ["grad_step"] = TrainGraphs.GradStep(spec),
            ["grad_accum_step"] = TrainGraphs.GradStep(spec with { Accumulate = true }),
            ["eval_step"] = TrainGraphs.EvalStep(spec),
        };
        using (var model = new SafetensorsModel(o.ModelDir))
        {
            Model.WeightLoader.Validate(model, graphs["grad_step"].Weights);
        }
        foreach (var (name, g) in graphs)
        {
            OnnxWriter.Save(g.Graph, Path.Combine(o.OutDir, name + ".onnx"));
            log?.WriteLine($"  {name}.onnx: {g.Graph.Nodes.Length} nodes");
        }
        WriteInitialAdapter(o, Path.Combine(o.OutDir, "adapter_init"), adapterCfg, graphs["grad_step"].Trainable);
        var manifest = Describe(spec, graphs, o.Device) with
        {
            ModelPath = Path.GetFullPath(o.ModelDir),
            ModelFingerprint = ModelConfig.Fingerprint(o.ModelDir),
        };
        manifest.Save(o.OutDir);
        return manifest;
    }

    /// <summary>
    /// The manifest of compiled graphs (graph files named NAME.onnx); ModelPath and ModelFingerprint are
    /// left empty for the caller to set (a folder on disk, or none for in-memory graphs such as the bench's).
    /// </summary>
    public static Manifest Describe(TrainSpec spec, IReadOnlyDictionary<string, CompiledGraph> graphs, Device device)
    {
        var grad = graphs["grad_step"];
        return new Manifest
        {
            ModelPath = "",
            ModelFingerprint = "",
            ModelType = spec.Model.ModelType,
            MicroBatchSize = spec.Shapes.MicroBatch,
            SeqLen = spec.Shapes.SeqLen,
            WeightDType = spec.WeightType.Name(),
            ComputeDType = spec.Compute.Name(),
            Device = device.ToString().ToLowerInvariant(),
            Accumulate = graphs.ContainsKey("grad_accum_step"),
            Checkpointing = spec.Checkpointing,
            Fused = spec.Fused,
            Graphs = graphs.ToDictionary(p => p.Key, p => new GraphSpec(p.Key + ".onnx", p.Value.Graph.Inputs.Select(Spec).ToArray(), p.Value.Graph.Outputs.Select(Spec).ToArray())),
            Trainable = grad.Trainable.Select(t => new TensorSpec(t.Key, "float32", t.Shape)).ToArray(),
            Weights = grad.Weights.Values.Select(Spec).ToArray(),
        };
    }

    internal static TensorSpec Spec(Value v) => new(v.Name, v.DType.Name(), v.Shape?.Dims.Select(d => d.IsStatic ? d.Value : -1).ToArray() ?? []);

    /// <summary>The initial adapter in <paramref name="dir"/>: the given weights (checked against the graph) or a seeded initialization.</summary>
    internal static void WriteInitialAdapter(BuildOptions o, string dir, AdapterConfig cfg, IReadOnlyList<TrainableTensor> trainable)
    {
        Directory.CreateDirectory(dir);
        var source = Directory.Exists(o.Adapter) ? o.Adapter : null;
        var hasWeights = source != null && (File.Exists(Path.Combine(source, AdapterWeights.SafetensorsName)) || File.Exists(Path.Combine(source, AdapterWeights.BinName)));
        using var model = new SafetensorsModel(o.ModelDir);
        AdapterWeights weights;
        if (hasWeights)
        {
            var loaded = AdapterWeights.Load(source!);
            AdapterStore.FillDoraMagnitudes(loaded, trainable, model.ReadFloat32, overwrite: false);   // the reference's adapters carry none
            weights = AdapterStore.CheckedLoad(loaded, source!, trainable);
        }
        else
        {
            weights = AdapterStore.Initialize(trainable, o.Seed, model.ReadFloat32);
        }
        AdapterStore.Save(dir, cfg, weights);
    }
}
