using MixLoRA.GraphBuilder.Adapters;
using System.CommandLine;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Cli;

/// <summary>`mixlora-build-graph`: compiles the artifacts folder for a model + adapter + shapes + dtype.</summary>
public static class BuildGraphCommand
{
    public static int Run(string[] args)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model folder (config.json + *.safetensors)", Required = true };
        var adapter = new Option<string?>("--adapter") { Description = "adapter folder (adapter_config.json [+ weights]) or adapter_config.json file" };
        var jobs = new Option<string?>("--jobs") { Description = "jobs.json: one graph for several adapters trained at once (instead of --adapter)" };
        var output = new Option<string>("--out") { Description = "artifacts folder to write", Required = true };
        var seqLen = new Option<int>("--seq-len") { Description = "sequence length of the graphs", DefaultValueFactory = _ => 512 };
        var micro = new Option<int>("--micro-batch-size") { Description = "rows per micro-batch (with --jobs: rows per job)", DefaultValueFactory = _ => 1 };
        var dtype = new Option<string>("--dtype") { Description = "float32 | float16 | bfloat16", DefaultValueFactory = _ => "float32" };
        var device = new Option<string>("--device") { Description = "cpu | cuda", DefaultValueFactory = _ => "cpu" };
        var seed = new Option<int>("--seed") { Description = "seed of the adapter initialization when no weights are given", DefaultValueFactory = _ => 42 };
        var checkpointing = new Option<bool>("--gradient-checkpointing") { Description = "recompute each decoder layer's activations in the backward (less memory, about one more forward per step)" };
        var noFused = new Option<bool>("--no-fused-kernels") { Description = "compose MixLoRA's expert activations, the experts' LoRA and the loss from ONNX ops instead of the trainer's fused kernels" };
        var command = new RootCommand("mixlora-build-graph: compile training graphs for a model and adapter") { model, adapter, jobs, output, seqLen, micro, dtype, device, seed, checkpointing, noFused };
        command.SetAction(p =>
        {
            GraphBuilder.Fail.If((p.GetValue(adapter) is null) == (p.GetValue(jobs) is null), "give exactly one of --adapter and --jobs", "--adapter DIR for one adapter, --jobs jobs.json for several");
            var o = new BuildOptions(p.GetValue(model)!, p.GetValue(adapter) ?? "", p.GetValue(output)!, p.GetValue(seqLen), p.GetValue(micro),
                DTypes.Parse(p.GetValue(dtype)!), OrtRuntime.ParseDevice(p.GetValue(device)!), p.GetValue(seed), p.GetValue(checkpointing), p.GetValue(noFused) ? FusedOps.None : FusedOps.All);
            Console.WriteLine($"building graphs for {o.ModelDir} into {o.OutDir}");
            if (p.GetValue(jobs) is { } file)
            {
                Trainer.Jobs.JobsArtifacts.Build(o, Trainer.Jobs.JobsFile.Load(file), Console.Out);
                return 0;
            }
            if (AdapterConfig.UnknownKeys(o.Adapter) is { Count: > 0 } unknown)
                Console.Error.WriteLine($"warning: {o.Adapter}: keys {string.Join(", ", unknown)} are not read by mixlora (a typo of a known key?)");
            var m = ArtifactsBuilder.Build(o, Console.Out);
            Console.WriteLine($"wrote {o.OutDir}/manifest.json: {m.Trainable.Count} trainable tensors ({m.Trainable.Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b)):N0} parameters), {m.Weights.Count} frozen weights");
            return 0;
        });
        return CliHost.Invoke(command, args);
    }
}
