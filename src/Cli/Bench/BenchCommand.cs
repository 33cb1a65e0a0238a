using System.CommandLine;
using MixLoRA.Cli.Bench;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;
using MixLoRA.Runtime.Collectives;

namespace MixLoRA.Cli.Bench;

/// <summary>
/// `mixlora-bench`: training throughput of a model shape on random weights through the mixlora-train path;
/// progress on stderr, one JSON line on stdout (see <see cref="BenchResult"/>).
/// </summary>
public static class BenchCommand
{
    public static int Run(string[] args, RuntimeSettings settings, DistributedSettings? distributed = null)
    {
        distributed ??= DistributedSettings.None;
        var config = new Option<string>("--config") { Description = $"{string.Join(" | ", BenchModels.Names)} | a config.json file", DefaultValueFactory = _ => "tiny" };
        var method = new Option<string>("--method") { Description = string.Join(" | ", BenchModels.Methods), DefaultValueFactory = _ => "mixlora" };
        method.AcceptOnlyFromAmong([.. BenchModels.Methods]);
        var seqLen = new Option<int?>("--seq-len") { Description = "tokens per row (default: tiny 128, small 256, others 512)" };
        var batch = new Option<int?>("--batch") { Description = "rows per step (default: tiny 4, small 4, tinyllama-1.1b 8, llama2-7b 4, file 1)" };
        var experts = new Option<int>("--experts") { Description = "experts (HydraLoRA: B heads)", DefaultValueFactory = _ => 8 };
        var topK = new Option<int>("--top-k") { Description = "experts per token (mixlora, mola)", DefaultValueFactory = _ => 2 };
        var r = new Option<int>("--r") { Description = "LoRA rank (alpha = 2·r)", DefaultValueFactory = _ => 16 };
        var dropout = new Option<double>("--dropout") { Description = "LoRA dropout", DefaultValueFactory = _ => 0.05 };
        var dtype = new Option<string?>("--dtype") { Description = "bfloat16 | float16 | float32 (default: float32 on cpu, bfloat16 on cuda)" };
        var device = new Option<string>("--device") { Description = "cpu | cuda", DefaultValueFactory = _ => "cpu" };
        var checkpointing = new Option<bool>("--gradient-checkpointing") { Description = "recompute each decoder layer's activations in the backward (activation checkpointing)" };
        var noFused = new Option<bool>("--no-fused-kernels") { Description = "compose MixLoRA's expert activations, the experts' LoRA and the loss from ONNX ops instead of the trainer's fused kernels" };
        var cudaGraph = CliHost.CudaGraphOption();
        var steps = new Option<int>("--steps") { Description = "timed steps", DefaultValueFactory = _ => 10 };
        var warmup = new Option<int>("--warmup") { Description = "untimed steps first", DefaultValueFactory = _ => 3 };
        var peak = new Option<double?>("--peak-tflops") { Description = "device peak for MFU (default 989.4 on cuda in bf16/fp16)" };
        var profile = new Option<string?>("--profile") { Description = "write ORT profiles to PREFIX*.json and print the top nodes on stderr" };
        var quiet = new Option<bool>("--quiet") { Description = "no progress on stderr" };
        var jobsN = new Option<int?>("--jobs") { Description = "train N copies of the adapter at once over one base (--batch rows each): aggregate and per-job tokens/s" };
        var lengths = new Option<string?>("--lengths") { Description = "also time real-length records padded and packed: alpaca | arc | a JSONL file (input_ids or length per line)" };
        var nproc = new Option<int?>("--nproc") { Description = "data parallel on this host: N ranks (cuda:0…N−1), --batch rows each a step; tokens/s of the group and scaling efficiency" };
        var rendezvous = new Option<double>("--rendezvous-timeout") { DefaultValueFactory = _ => 300, Description = "seconds the ranks wait for each other at start-up" };
        var command = new RootCommand("mixlora-bench: training throughput on random weights of a model shape")
        {
            config, method, seqLen, batch, experts, topK, r, dropout, dtype, device, checkpointing, noFused, cudaGraph, steps, warmup, peak, profile, quiet, lengths, jobsN, nproc, rendezvous,
        };
        command.SetAction(p =>
        {
            if (p.GetValue(nproc) is { } n)
            {
                GraphBuilder.Fail.If(n < 1 || distributed.Present || p.GetValue(jobsN) != null, $"--nproc {n} with --jobs, in a launcher's rank (WORLD_SIZE set), or below 1",
                    "use --nproc 1 or more on its own");
                return Distributed.NprocLauncher.Run("bench", n, Distributed.NprocLauncher.Without(args, "--nproc"), Console.Out, Console.Error);
            }
            var o = new BenchOptions
            {
                Config = p.GetValue(config)!,
                Adapter = new AdapterChoice(p.GetValue(method)!, p.GetValue(r), 2.0 * p.GetValue(r), p.GetValue(experts), p.GetValue(topK), p.GetValue(dropout)),
                SeqLen = p.GetValue(seqLen), Batch = p.GetValue(batch),
                DType = p.GetValue(dtype) is { } d ? DTypes.Parse(d) : null,
                Device = OrtRuntime.ParseDevice(p.GetValue(device)!), Runtime = settings,
                GradientCheckpointing = p.GetValue(checkpointing),
                Fused = p.GetValue(noFused) ? FusedOps.None : FusedOps.All, CudaGraph = p.GetValue(cudaGraph),
                Steps = p.GetValue(steps), Warmup = p.GetValue(warmup), PeakTflops = p.GetValue(peak), Profile = p.GetValue(profile),
                Lengths = p.GetValue(lengths) is { } l ? LengthDistribution.Parse(l) : null,
            };
            var progress = p.GetValue(quiet) ? TextWriter.Null : Console.Error;
            var me = distributed.Resolve();
            var result = me != null ? DataParallelBench.Run(o, me, TimeSpan.FromSeconds(p.GetValue(rendezvous)), me.Rank == 0 ? progress : TextWriter.Null)
                : p.GetValue(jobsN) is { } jobs ? JobsBench.Run(o, jobs, progress) : BenchRunner.Run(o, progress);
            if (me is not { Rank: > 0 }) Console.WriteLine(result.ToJson());                // rank 0 prints the group's line
            return 0;
        });
        return command.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }
}
