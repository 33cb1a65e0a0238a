using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.Trainer.Runtime;

namespace MixLoRA.Trainer.Training;

/// <summary>What `mixlora-build-graph` compiles.</summary>
public sealed record BuildOptions(string ModelDir, string Adapter, string OutDir, int SeqLen = 512, int MicroBatch = 1, DType DType = DType.Float32, Device Device = Device.Cpu, int Seed = 42);

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
        Directory.CreateDirectory(o.OutDir);
        var spec = new TrainSpec(cfg, adapterCfg, new Shapes(o.MicroBatch, o.SeqLen), o.DType, o.DType);
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
        var specs = new Dictionary<string, GraphSpec>();
        foreach (var (name, g) in graphs)
        {
            OnnxWriter.Save(g.Graph, Path.Combine(o.OutDir, name + ".onnx"));
            specs[name] = new GraphSpec(name + ".onnx", g.Graph.Inputs.Select(Spec).ToArray(), g.Graph.Outputs.Select(Spec).ToArray());
            log?.WriteLine($"  {name}.onnx: {g.Graph.Nodes.Length} nodes");
        }
        var trainable = graphs["grad_step"].Trainable;
        WriteInitialAdapter(o, adapterCfg, trainable);
        var manifest = new Manifest
        {
            ModelPath = Path.GetFullPath(o.ModelDir),
            ModelFingerprint = ModelConfig.Fingerprint(o.ModelDir),
            ModelType = cfg.ModelType,
            MicroBatchSize = o.MicroBatch,
            SeqLen = o.SeqLen,
            WeightDType = o.DType.Name(),
            ComputeDType = o.DType.Name(),
            Device = o.Device.ToString().ToLowerInvariant(),
            Accumulate = true,
            Graphs = specs,
            Trainable = trainable.Select(t => new TensorSpec(t.Key, "float32", t.Shape)).ToArray(),
            Weights = graphs["grad_step"].Weights.Values.Select(Spec).ToArray(),
        };
        manifest.Save(o.OutDir);
        return manifest;
    }

    private static TensorSpec Spec(Value v) => new(v.Name, v.DType.Name(), v.Shape?.Dims.Select(d => d.IsStatic ? d.Value : -1).ToArray() ?? []);

    /// <summary>adapter_init/: the given weights (checked against the graph) or a seeded initialization.</summary>
    private static void WriteInitialAdapter(BuildOptions o, AdapterConfig cfg, IReadOnlyList<TrainableTensor> trainable)
    {
        var dir = Path.Combine(o.OutDir, "adapter_init");
        Directory.CreateDirectory(dir);
        var source = Directory.Exists(o.Adapter) ? o.Adapter : null;
        var hasWeights = source != null && (File.Exists(Path.Combine(source, AdapterWeights.SafetensorsName)) || File.Exists(Path.Combine(source, AdapterWeights.BinName)));
        var weights = hasWeights ? AdapterStore.CheckedLoad(source!, trainable) : AdapterStore.Initialize(trainable, o.Seed);
        AdapterStore.Save(dir, cfg, weights);
    }
}
