using System.CommandLine;
using MixLoRA.Runtime;
using MixLoRA.Runtime.Collectives;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Cli;

/// <summary>`mixlora-train`: trains an adapter from an artifacts folder (or the embedded demo).</summary>
public static class TrainCommand
{
    /// <summary>
    /// Runs with the arguments after `train` and the start-up <paramref name="settings"/>; without --artifacts (and
    /// without --help) it runs <paramref name="demo"/> instead when one is given (<see cref="Commands"/> passes the embedded demo).
    /// </summary>
    /// <param name="distributed">the launcher's variables read at start-up (RANK, WORLD_SIZE, …): this process is one rank of a data-parallel run.</param>
    public static int Run(string[] args, RuntimeSettings settings, Func<string[], int>? demo = null, DistributedSettings? distributed = null)
    {
        distributed ??= DistributedSettings.None;
        if (demo != null && !args.Contains("--artifacts") && !args.Contains("--help") && !args.Contains("-h")) return demo(args);
        var artifacts = new Option<string>("--artifacts") { Description = "artifacts folder from mixlora-build-graph", Required = true };
        var data = new Option<string[]>("--data") { Description = "training data (JSONL/JSON; TASK:FILE); repeat to mix (required without --jobs)", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string?>("--out") { Description = "output folder (adapter/, metrics.jsonl, checkpoints/; required without --jobs)" };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 8, Description = "records per optimizer step" };
        var micro = new Option<int?>("--micro-batch-size") { Description = "records per micro-batch, rows with --packing (the artifacts' value)" };
        var steps = new Option<int?>("--steps") { Description = "optimizer steps" };
        var epochs = new Option<double?>("--epochs") { Description = "epochs (when --steps is not given; default 1)" };
        var lr = new Option<double>("--lr") { DefaultValueFactory = _ => 2e-4, Description = "peak learning rate" };
        var wd = new Option<double>("--weight-decay") { DefaultValueFactory = _ => 0, Description = "AdamW decoupled weight decay" };
        var sched = new Option<string>("--lr-scheduler") { DefaultValueFactory = _ => "constant", Description = "constant | linear | cosine" };
        var warmup = new Option<int>("--warmup-steps") { DefaultValueFactory = _ => 0 };
        var clip = new Option<double?>("--max-grad-norm") { Description = "clip gradients to this global norm" };
        var noShuffle = new Option<bool>("--no-shuffle") { Description = "step k uses records (k·B + j) mod N" };
        var group = new Option<bool>("--group-by-length") { Description = "order each epoch longest first" };
        var jobs = new Option<string?>("--jobs") { Description = "jobs.json: train several adapters at once (artifacts built with --jobs); other flags are per job, in the file" };
        var packing = new Option<bool>("--packing") { Description = "pack each step's records into rows of --seq-len (attention, positions and loss stay within each record)" };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 42 };
        var device = new Option<string>("--device") { DefaultValueFactory = _ => "cpu", Description = "cpu | cuda" };
        var save = new Option<int>("--save-steps") { DefaultValueFactory = _ => 0, Description = "checkpoint every N steps (and always at the end)" };
        var resume = new Option<bool>("--resume") { Description = "continue from the newest checkpoint in --out" };
        var overwrite = new Option<bool>("--overwrite") { Description = "start again in an --out that holds a run, deleting it first" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "tokenizer.json (default: the model folder's)" };
        var cutoff = new Option<int?>("--cutoff-len") { Description = "truncate examples to this many tokens" };
        var inputs = new Option<bool>("--train-on-inputs") { Description = "keep the loss on prompt tokens" };
        var template = new Option<string>("--template") { DefaultValueFactory = _ => "alpaca", Description = "alpaca | plain (instruction data)" };
        var evalData = new Option<string[]>("--eval-data") { Description = "evaluation data", Arity = ArgumentArity.ZeroOrMore };
        var evalSteps = new Option<int>("--eval-steps") { DefaultValueFactory = _ => 0, Description = "evaluate every N steps (and at the end)" };
        var quiet = new Option<bool>("--quiet") { Description = "no progress output" };
        var cudaGraph = CliHost.CudaGraphOption();
        var nproc = new Option<int?>("--nproc") { Description = "data parallel on this host: run N processes (ranks), each on cuda:RANK with --device cuda or on the CPU; without it, RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT (torchrun's) make this process one rank" };
        var rendezvous = new Option<double>("--rendezvous-timeout") { DefaultValueFactory = _ => 300, Description = "seconds the ranks of a data-parallel run wait for each other at start-up" };
        var saveBin = new Option<bool>("--save-bin") { Description = "also write OUT/adapter/adapter_model.bin (the reference's torch format)" };
        var command = new RootCommand("mixlora-train: train a MixLoRA / LoRA adapter (without --artifacts: the embedded demo on a generated tiny model)")
        {
            artifacts, data, output, batch, micro, steps, epochs, lr, wd, sched, warmup, clip, noShuffle, group, packing, jobs, seed, device, save, resume,
            tokenizer, cutoff, inputs, template, evalData, evalSteps, quiet, saveBin, cudaGraph, overwrite, nproc, rendezvous,
        };
        command.SetAction(p =>
        {
            if (p.GetValue(nproc) is { } n) return Launch(n, args, distributed, p.GetValue(jobs) != null);
            if (p.GetValue(jobs) is { } file)
            {
                GraphBuilder.Fail.If(distributed.Present, "--jobs in a data-parallel group (WORLD_SIZE is set)", "train several adapters in one process: unset WORLD_SIZE, or train one adapter per data-parallel run");
                var jo = new Trainer.Jobs.JobsOptions(p.GetValue(artifacts)!, file, OrtRuntime.ParseDevice(p.GetValue(device)!), p.GetValue(quiet), p.GetValue(resume), p.GetValue(overwrite)) { Runtime = settings };
                return Trainer.Jobs.JobsLoop.Run(jo).Any(j => j.Error != null) ? 1 : 0;
            }
            GraphBuilder.Fail.If(p.GetValue(data) is not { Length: > 0 } || p.GetValue(output) is null, "--data and --out are required", "give the training data and the run folder (or --jobs jobs.json)");
            var o = new TrainOptions
            {
                Artifacts = p.GetValue(artifacts)!, Data = (p.GetValue(data) ?? []).Select(DataSource.Parse).ToArray(), Out = p.GetValue(output)!,
                BatchSize = p.GetValue(batch), MicroBatchSize = p.GetValue(micro), Steps = p.GetValue(steps), Epochs = p.GetValue(epochs),
                Lr = p.GetValue(lr), WeightDecay = p.GetValue(wd), LrScheduler = p.GetValue(sched)!, WarmupSteps = p.GetValue(warmup),
                MaxGradNorm = p.GetValue(clip), Shuffle = !p.GetValue(noShuffle), GroupByLength = p.GetValue(group), Packing = p.GetValue(packing), Seed = p.GetValue(seed),
                Device = OrtRuntime.ParseDevice(p.GetValue(device)!), Runtime = settings, SaveSteps = p.GetValue(save), Resume = p.GetValue(resume),
                Tokenizer = p.GetValue(tokenizer), CutoffLen = p.GetValue(cutoff), TrainOnInputs = p.GetValue(inputs), Template = p.GetValue(template)!,
                EvalData = (p.GetValue(evalData) ?? []).Select(DataSource.Parse).ToArray(), EvalSteps = p.GetValue(evalSteps), Quiet = p.GetValue(quiet),
                SaveBin = p.GetValue(saveBin), CudaGraph = p.GetValue(cudaGraph), Overwrite = p.GetValue(overwrite), HandleSignals = true,
                Ranks = distributed.Resolve(), RendezvousTimeout = TimeSpan.FromSeconds(p.GetValue(rendezvous)),
            };
            var summary = TrainLoop.Run(o);
            return summary.StoppedBySignal == 0 ? 0 : 128 + summary.StoppedBySignal;           // the shell's code for a signal
        });
        return CliHost.Invoke(command, args);
    }

    /// <summary>`--nproc N`: the ranks as child processes of this command (<see cref="Distributed.NprocLauncher"/>).</summary>
    private static int Launch(int n, string[] args, DistributedSettings distributed, bool jobs)
    {
        GraphBuilder.Fail.If(n < 1, $"--nproc {n} must be positive", "use --nproc 1 or more (one per GPU with --device cuda)");
        GraphBuilder.Fail.If(distributed.Present, $"--nproc in a process a launcher started as one rank (WORLD_SIZE={distributed.WorldSize})",
            "drop --nproc: the launcher starts the ranks (torchrun --nproc-per-node N), or start mixlora-train --nproc N without those variables");
        GraphBuilder.Fail.If(jobs, "--nproc with --jobs", "train several adapters in one process (--jobs), or one adapter over several processes (--nproc)");
        return Distributed.NprocLauncher.Run("train", n, Distributed.NprocLauncher.Without(args, "--nproc"), Console.Out, Console.Error);
    }
}
