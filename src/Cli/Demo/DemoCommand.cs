using System.CommandLine;
using System.Text.Json.Nodes;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.Runtime;
using MixLoRA.Text.Data;
using MixLoRA.Text.Tokenization;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Cli.Demo;

/// <summary>What the demo produced, for callers (tests) and the final printout.</summary>
public sealed record DemoResult(string Root, string ModelDir, string DataDir, string ArtifactsDir, string RunDir, TrainSummary Summary)
{
    /// <summary>Held-out accuracy of the base model and of the trained adapter per task.</summary>
    public IReadOnlyList<DemoTaskScore> HeldOut { get; init; } = [];
}

/// <summary>
/// `mixlora-train` without `--artifacts`: generates a tiny LLaMA model, a tokenizer.json and a three-task
/// dataset, builds the MixLoRA training graphs (4 experts, top-2, r 8) and trains them on the CPU, prints
/// the base model's and the trained adapter's accuracy on held-out records of each task
/// (<see cref="DemoEval"/>), then says where everything is. `--out DIR` (default `artifacts/demo` in the
/// repository), `--steps`, `--lr`, `--seed`, `--device`, `--save-bin`, `--quiet` and `--no-fused-kernels` pass through.
/// </summary>
public static class DemoCommand
{
    /// <summary>Runs the demo with the arguments after `train` (<see cref="Commands"/> passes this to <see cref="TrainCommand"/>).</summary>
    public static int Run(string[] args, RuntimeSettings runtime)
    {
        var output = new Option<string?>("--out") { Description = "demo folder (default: artifacts/demo in the repository)" };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 300, Description = "optimizer steps" };
        var lr = new Option<double>("--lr") { DefaultValueFactory = _ => 3e-3, Description = "learning rate" };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 7, Description = "seed of the model, data and adapter" };
        var device = new Option<string>("--device") { DefaultValueFactory = _ => "cpu", Description = "cpu | cuda" };
        var saveBin = new Option<bool>("--save-bin") { Description = "also write adapter_model.bin" };
        var quiet = new Option<bool>("--quiet") { Description = "no progress output" };
        var composed = new Option<bool>("--no-fused-kernels") { Description = "build the graphs from ONNX ops only (as mixlora-build-graph --no-fused-kernels)" };
        var command = new RootCommand("mixlora-train (demo): train a MixLoRA adapter on a generated tiny model and dataset; pass --artifacts for real training")
        {
            output, steps, lr, seed, device, saveBin, quiet, composed,
        };
        command.SetAction(p =>
        {
            var settings = new DemoSettings(p.GetValue(output) ?? DefaultRoot(), p.GetValue(steps), p.GetValue(lr), p.GetValue(seed),
                OrtRuntime.ParseDevice(p.GetValue(device)!), p.GetValue(saveBin), p.GetValue(quiet), p.GetValue(composed) ? GraphBuilder.Ops.FusedOps.None : GraphBuilder.Ops.FusedOps.All) { Runtime = runtime };
            Execute(settings, Console.Out);
            return 0;
        });
        return CliHost.Invoke(command, args);
    }

    /// <summary>The demo's knobs.</summary>
    /// <param name="Fused">the fused ops to build with (None: composed graphs, as `--no-fused-kernels`; Debug test builds run them faster).</param>
    public sealed record DemoSettings(string Root, int Steps, double Lr, int Seed, Device Device, bool SaveBin = false, bool Quiet = false,
        GraphBuilder.Ops.FusedOps Fused = GraphBuilder.Ops.FusedOps.All)
    {
        /// <summary>The MIXLORA_* settings the CLI read at start-up.</summary>
        public RuntimeSettings Runtime { get; init; } = RuntimeSettings.Default;
    }

    /// <summary>Records per optimizer step (one micro-batch).</summary>
    public const int Batch = 16;

    public static DemoResult Execute(DemoSettings s, TextWriter log)
    {
        GraphBuilder.Fail.If(s.Steps < 1, $"--steps {s.Steps} must be positive", "use --steps 1 or more");
        var root = Path.GetFullPath(s.Root);
        var (model, data, artifacts, run) = (Path.Combine(root, "model"), Path.Combine(root, "data"), Path.Combine(root, "artifacts"), Path.Combine(root, "run"));
        log.WriteLine($"MixLoRA.NET demo: a tiny LLaMA model, tokenizer and 3-task dataset generated in {root}");
        var tasks = DemoCorpus.Generate(s.Seed);
        Directory.CreateDirectory(model);
        var (tokJson, vocab) = DemoTokenizer.Build(AllTexts(tasks).Select(t => t.Prompt + t.Target), merges: 160);
        var cfg = DemoModel.Config(vocab);
        DemoModel.Write(model, cfg, s.Seed);
        DemoModel.WriteTokenizer(model, tokJson, cfg);
        Directory.CreateDirectory(data);
        var dataArgs = tasks.Select(t => DemoCorpus.Write(t, data)).ToArray();
        var adapterFile = Path.Combine(root, "adapter_config.json");
        AtomicFile.WriteAllText(adapterFile, AdapterConfigJson().ToJsonString(new() { WriteIndented = true }));
        var seqLen = SequenceLength(Path.Combine(model, "tokenizer.json"), tasks);
        log.WriteLine($"  model: llama, {cfg.NumLayers} layers, hidden {cfg.HiddenSize}, vocab {cfg.VocabSize} ({vocab} tokens, BPE with byte fallback)");
        log.WriteLine($"  data: {string.Join(", ", tasks.Select(t => $"{t.Name} {t.Records.Count}"))} training records (+ {string.Join("/", tasks.Select(t => t.HeldOut.Count))} held out); sequence length {seqLen}");
        log.WriteLine($"  adapter: MixLoRA, 4 experts, top-2, r 8 on q/k/v/o/gate/up/down");
        if (Directory.Exists(run)) Directory.Delete(run, true);
        var manifest = ArtifactsBuilder.Build(new BuildOptions(model, adapterFile, artifacts, seqLen, MicroBatch: Batch, Device: s.Device, Seed: s.Seed, Fused: s.Fused), s.Quiet ? null : log);
        log.WriteLine($"  graphs: {artifacts} ({manifest.Trainable.Count} trainable tensors)");
        log.WriteLine($"  same as: bin/mixlora-build-graph --model {model} --adapter {adapterFile} --out {artifacts} --seq-len {seqLen} --micro-batch-size {Batch}{(s.Fused == GraphBuilder.Ops.FusedOps.None ? " --no-fused-kernels" : "")}");
        log.WriteLine($"           bin/mixlora-train --artifacts {artifacts} --data {string.Join(" --data ", dataArgs)} --template plain --out {run} --batch-size {Batch} --steps {s.Steps} --lr {s.Lr} --lr-scheduler cosine --warmup-steps {Math.Min(10, s.Steps / 10)} --seed {s.Seed}");
        var options = new TrainOptions
        {
            Artifacts = artifacts, Data = dataArgs.Select(DataSource.Parse).ToArray(), Out = run, BatchSize = Batch, Steps = s.Steps, Lr = s.Lr,
            LrScheduler = "cosine", WarmupSteps = Math.Min(10, s.Steps / 10), Template = "plain", Seed = s.Seed, Device = s.Device, Runtime = s.Runtime, SaveBin = s.SaveBin, Quiet = s.Quiet,
        };
        var summary = TrainLoop.Run(options, log);
        var (head, tail) = SmoothedLoss(summary.MetricsPath, Math.Max(1, s.Steps / 10));
        log.WriteLine($"loss, mean of the first and of the last {Math.Max(1, s.Steps / 10)} steps: {head:F3} → {tail:F3}");
        var scores = DemoEval.Run(model, Path.Combine(model, "tokenizer.json"), Path.Combine(artifacts, manifest.AdapterDir), summary.AdapterDir!, tasks, OrtRuntime.For(Device.Cpu, s.Runtime));
        log.WriteLine("held-out records (never trained on), base model → trained adapter:");
        foreach (var t in scores)
            log.WriteLine($"  {t.Task,-12} {t.Metric,-16} {t.BaseCorrect,3}/{t.Count} ({t.Base:P0}) → {t.TrainedCorrect,3}/{t.Count} ({t.Trained:P0})");
        log.WriteLine("demo outputs:");
        log.WriteLine($"  model      {model} (config.json, model.safetensors, tokenizer.json, tokenizer_config.json)");
        log.WriteLine($"  data       {data}");
        log.WriteLine($"  graphs     {artifacts}");
        log.WriteLine($"  adapter    {summary.AdapterDir}");
        log.WriteLine($"  metrics    {summary.MetricsPath}");
        return new DemoResult(root, model, data, artifacts, run, summary) { HeldOut = scores };
    }

    /// <summary>Mean lm_loss of the first and of the last <paramref name="n"/> steps in metrics.jsonl.</summary>
    public static (double First, double Last) SmoothedLoss(string metricsPath, int n)
    {
        var losses = File.ReadLines(metricsPath).Select(l => JsonNode.Parse(l)!.AsObject())
            .Where(o => o.ContainsKey("lm_loss")).Select(o => (double)o["lm_loss"]!).ToList();
        return (losses.Take(n).Average(), losses.TakeLast(n).Average());
    }

    private static JsonObject AdapterConfigJson() => new()
    {
        ["bias"] = "none", ["peft_type"] = "MIXLORA", ["task_type"] = "CAUSAL_LM", ["r"] = 8, ["lora_alpha"] = 32, ["lora_dropout"] = 0.0,
        ["target_modules"] = new JsonArray("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        ["routing_strategy"] = "mixlora", ["num_experts"] = 4, ["top_k"] = 2, ["act_fn"] = "silu",
        ["router_aux_loss_coef"] = 0.01, ["router_init_range"] = 0.02, ["jitter_noise"] = 0.0,
    };

    /// <summary>The longest tokenized example, rounded up to a multiple of 8.</summary>
    private static int SequenceLength(string tokenizerFile, IReadOnlyList<DemoTask> tasks)
    {
        var tok = HfTokenizer.Load(tokenizerFile);
        var longest = AllTexts(tasks).Max(t => tok.Encode(t.Prompt + t.Target).Count);
        return (longest + 7) / 8 * 8;
    }

    private static IEnumerable<TextPair> AllTexts(IReadOnlyList<DemoTask> tasks) => tasks.SelectMany(t => t.Texts.Concat(t.HeldOutTexts));

    /// <summary>`artifacts/demo` in the repository holding this build (found by MixLoRA.sln), else `./mixlora-demo`.</summary>
    private static string DefaultRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "MixLoRA.sln"))) return Path.Combine(d.FullName, "artifacts", "demo");
        return Path.Combine(Environment.CurrentDirectory, "mixlora-demo");
    }
}
