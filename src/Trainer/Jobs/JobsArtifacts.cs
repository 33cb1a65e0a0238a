using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.Runtime;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Trainer.Jobs;

/// <summary>
/// `mixlora-build-graph --jobs jobs.json`: one artifacts folder for all the jobs — `grad_accum_step.onnx` and
/// `eval_step.onnx` over J·R rows (<see cref="JobsGraphs"/>), `adapter_init/NAME/` per job and a manifest listing
/// the jobs. Written beside the folder and renamed over it when complete.
/// </summary>
public static class JobsArtifacts
{
    public static Manifest Build(BuildOptions o, IReadOnlyList<JobSpec> jobs, TextWriter? log = null)
    {
        if (!Directory.Exists(o.ModelDir)) throw Fail.User($"model folder '{o.ModelDir}' does not exist", "pass --model with a Hugging Face model folder (config.json + *.safetensors)");
        var cfg = ModelConfig.Load(o.ModelDir);
        var adapters = jobs.Select(j => new JobAdapter(j.Name, AdapterConfig.Load(j.Adapter))).ToArray();
        Fail.If(o.SeqLen < 2 || o.MicroBatch < 1, $"--seq-len {o.SeqLen} / --micro-batch-size {o.MicroBatch}", "use a sequence length of 2 or more and 1 or more rows per job");
        Fail.If(o.Device == Device.Cpu && o.DType != DType.Float32, $"--dtype {o.DType.Name()} on the CPU", "the CPU provider computes in float32: use --dtype float32, or --device cuda");
        return AtomicFolder.Write(o.OutDir, "mixlora-build-graph", tmp => Emit(o with { OutDir = tmp }, cfg, jobs, adapters, log));
    }

    private static Manifest Emit(BuildOptions o, ModelConfig cfg, IReadOnlyList<JobSpec> jobs, JobAdapter[] adapters, TextWriter? log)
    {
        Directory.CreateDirectory(o.OutDir);
        var fused = Runtime.Kernels.FusedKernels.For(o.Fused, o.Device, o.DType, log);
        var spec = new JobsSpec(cfg, adapters, new Shapes(o.MicroBatch, o.SeqLen), o.DType, o.DType, Accumulate: true, Checkpointing: o.Checkpointing, Fused: fused);
        var graphs = new Dictionary<string, CompiledJobs> { ["grad_accum_step"] = JobsGraphs.GradStep(spec), ["eval_step"] = JobsGraphs.EvalStep(spec) };
        var grad = graphs["grad_accum_step"];
        using (var model = new SafetensorsModel(o.ModelDir)) Model.WeightLoader.Validate(model, grad.Weights);
        foreach (var (name, g) in graphs)
        {
            OnnxWriter.Save(g.Graph, Path.Combine(o.OutDir, name + ".onnx"));
            log?.WriteLine($"  {name}.onnx: {g.Graph.Nodes.Length} nodes");
        }
        var manifestJobs = new List<JobManifest>();
        for (var j = 0; j < jobs.Count; j++)
        {
            var dir = Path.Combine("adapter_init", jobs[j].Name);
            ArtifactsBuilder.WriteInitialAdapter(o with { Adapter = jobs[j].Adapter }, Path.Combine(o.OutDir, dir), adapters[j].Adapter, grad.Trainable[j]);
            manifestJobs.Add(new JobManifest(jobs[j].Name, dir, grad.Trainable[j].Select(t => new TensorSpec(t.Key, "float32", t.Shape)).ToArray()));
        }
        var manifest = Describe(spec, graphs, o.Device, manifestJobs) with { ModelPath = Path.GetFullPath(o.ModelDir), ModelFingerprint = ModelConfig.Fingerprint(o.ModelDir) };
        manifest.Save(o.OutDir);
        log?.WriteLine($"wrote {Path.Combine(o.OutDir, Manifest.FileName)}: {jobs.Count} jobs ({string.Join(", ", manifestJobs.Select(j => $"{j.Name} {j.Trainable.Sum(t => t.Shape.Aggregate(1L, (a, c) => a * c)):N0} parameters"))}), {o.MicroBatch} rows each per micro-batch");
        return manifest;
    }

    /// <summary>The manifest of compiled jobs graphs (files NAME.onnx); ModelPath and fingerprint left empty for the caller.</summary>
    public static Manifest Describe(JobsSpec spec, IReadOnlyDictionary<string, CompiledJobs> graphs, Device device, IReadOnlyList<JobManifest> jobs) => new()
    {
        ModelPath = "", ModelFingerprint = "", ModelType = spec.Model.ModelType,
        MicroBatchSize = spec.PerJob.MicroBatch, SeqLen = spec.PerJob.SeqLen, WeightDType = spec.WeightType.Name(), ComputeDType = spec.Compute.Name(),
        Device = device.ToString().ToLowerInvariant(), Accumulate = true, Checkpointing = spec.Checkpointing, Fused = spec.Fused, AdapterDir = "adapter_init",
        Graphs = graphs.ToDictionary(p => p.Key, p => new GraphSpec(p.Key + ".onnx", p.Value.Graph.Inputs.Select(ArtifactsBuilder.Spec).ToArray(), p.Value.Graph.Outputs.Select(ArtifactsBuilder.Spec).ToArray())),
        Trainable = [], Weights = graphs["grad_accum_step"].Weights.Values.Select(ArtifactsBuilder.Spec).ToArray(), Jobs = jobs,
    };
}
