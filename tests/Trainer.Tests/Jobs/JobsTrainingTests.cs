using System.Text.Json.Nodes;
using MixLoRA.Cli;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Tests.Training;

namespace MixLoRA.Trainer.Tests.Jobs;

/// <summary>
/// Issue 21: several adapters trained at once over one frozen base give each job what training it alone gives. On the
/// CPU in fp32, five jobs — MixLoRA top-k, MixLoRA top-p (mixlora-dynamic), LoRA with another r, lr, schedule and
/// batch size, mixlora-switch (capacity per sequence, so tokens are dropped) and MoLA with per-group experts and its
/// router loss, each on its own data — are trained from one jobs file and one graph, and each against its solo run
/// (build-graph --adapter + train with the same settings): per-step losses within 1e-5 relative, final adapters within
/// 1e-5 relative L2, the same files. A job with broken data stops with its own error; the others finish.
/// </summary>
[TestClass]
public sealed class JobsTrainingTests
{
    private static JsonObject Adapter(string kind) => kind switch
    {
        "topk" => new() { ["peft_type"] = "MIXLORA", ["r"] = 4, ["lora_alpha"] = 8, ["lora_dropout"] = 0.0, ["routing_strategy"] = "mixlora",
            ["num_experts"] = 4, ["top_k"] = 2, ["router_aux_loss_coef"] = 0.01, ["target_modules"] = Targets("q_proj", "v_proj", "gate_proj", "up_proj", "down_proj") },
        "topp" => new() { ["peft_type"] = "MIXLORA", ["r"] = 2, ["lora_alpha"] = 4, ["lora_dropout"] = 0.0, ["routing_strategy"] = "mixlora-dynamic",
            ["num_experts"] = 3, ["top_p"] = 0.6, ["temperature"] = 0.0, ["router_aux_loss_coef"] = 0.02, ["target_modules"] = Targets("k_proj", "o_proj", "gate_proj", "up_proj", "down_proj") },
        "switch" => new() { ["peft_type"] = "MIXLORA", ["r"] = 4, ["lora_alpha"] = 8, ["lora_dropout"] = 0.0, ["routing_strategy"] = "mixlora-switch",
            ["num_experts"] = 4, ["expert_capacity"] = 3, ["jitter_noise"] = 0.0, ["router_aux_loss_coef"] = 0.01, ["target_modules"] = Targets("gate_proj", "up_proj", "down_proj") },
        "mola" => new() { ["peft_type"] = "MOLA", ["r"] = 4, ["lora_alpha"] = 8, ["lora_dropout"] = 0.0, ["num_experts"] = new JsonArray(3, 2), ["top_k"] = 2,
            ["router_loss"] = true, ["router_aux_loss_coef"] = 0.01, ["target_modules"] = Targets("q_proj", "v_proj", "up_proj", "down_proj") },
        _ => new() { ["peft_type"] = "LORA", ["task_type"] = "CAUSAL_LM", ["r"] = 8, ["lora_alpha"] = 16, ["lora_dropout"] = 0.0,
            ["target_modules"] = Targets("q_proj", "k_proj", "v_proj", "o_proj", "down_proj") },
    };

    private static JsonArray Targets(params string[] t) => new([.. t.Select(x => (JsonNode)x)]);

    /// <summary>The jobs: name, adapter kind, data (records of the parity data), batch size, lr, schedule, steps.</summary>
    private static readonly (string Name, string Kind, int[] Records, int Batch, double Lr, string Schedule, int Steps)[] Jobs =
    [
        ("top-k", "topk", [0, 1, 2, 3, 4, 5], 4, 0.01, "constant", 4),
        ("top-p", "topp", [5, 3, 1], 2, 0.02, "cosine", 5),
        ("lora", "lora", [2, 4, 0, 1], 2, 0.005, "linear", 3),
        ("switch", "switch", [1, 2, 3, 4], 4, 0.01, "constant", 2),
        ("mola", "mola", [0, 2, 4], 2, 0.01, "constant", 3),
    ];

    [TestMethod]
    public void EachJobTrainsWhatItsSoloRunTrains()
    {
        var work = TestFiles.TempDir();
        var lines = File.ReadAllLines(TrainFixture.Data);
        var jobs = new JsonArray();
        foreach (var (name, kind, records, batch, lr, schedule, steps) in Jobs)
        {
            Directory.CreateDirectory(Path.Combine(work, name));
            File.WriteAllText(Path.Combine(work, name, "adapter_config.json"), Adapter(kind).ToJsonString());
            File.WriteAllLines(Path.Combine(work, name, "data.jsonl"), records.Select(i => lines[i]));
            jobs.Add(new JsonObject
            {
                ["name"] = name, ["adapter"] = $"{name}/adapter_config.json", ["data"] = new JsonArray($"{name}/data.jsonl"), ["out"] = $"runs/{name}",
                ["batch_size"] = batch, ["lr"] = lr, ["lr_scheduler"] = schedule, ["warmup_steps"] = 1, ["steps"] = steps, ["weight_decay"] = 0.01,
                ["max_grad_norm"] = 1.0, ["seed"] = 5, ["eval_data"] = new JsonArray($"{name}/data.jsonl"), ["eval_steps"] = 2,
            });
        }
        var file = Path.Combine(work, "jobs.json");
        File.WriteAllText(file, new JsonObject { ["jobs"] = jobs }.ToJsonString());
        Assert.AreEqual(0, Commands.Run(["build-graph", "--model", TrainFixture.Model, "--jobs", file, "--out", Path.Combine(work, "art"), "--seq-len", "32", "--micro-batch-size", "2", "--seed", "3"]));
        Assert.AreEqual(0, Commands.Run(["train", "--artifacts", Path.Combine(work, "art"), "--jobs", file, "--quiet"]));

        foreach (var (name, _, _, batch, lr, schedule, steps) in Jobs)
        {
            var solo = Path.Combine(work, "solo-" + name);
            Assert.AreEqual(0, Commands.Run(["build-graph", "--model", TrainFixture.Model, "--adapter", Path.Combine(work, name, "adapter_config.json"),
                "--out", solo + "-art", "--seq-len", "32", "--micro-batch-size", "2", "--seed", "3"]));
            var data = Path.Combine(work, name, "data.jsonl");
            Assert.AreEqual(0, Commands.Run(["train", "--artifacts", solo + "-art", "--data", data, "--out", solo, "--batch-size", $"{batch}", "--lr", $"{lr}",
                "--lr-scheduler", schedule, "--warmup-steps", "1", "--steps", $"{steps}", "--weight-decay", "0.01", "--max-grad-norm", "1.0", "--seed", "5",
                "--eval-data", data, "--eval-steps", "2", "--quiet"]));
            AssertSameRun(solo, Path.Combine(work, "runs", name), name);
        }
    }

    /// <summary>A jobs file of two LoRA jobs on the parity data; job "bad" gets <paramref name="badData"/> as its data when given.</summary>
    private static (string Work, string File) TwoJobs(string? badData = null, int steps = 4)
    {
        var work = TestFiles.TempDir();
        File.WriteAllText(Path.Combine(work, "adapter_config.json"), Adapter("lora").ToJsonString());
        var data = badData is null ? TrainFixture.Data : TestFiles.Write(work, "bad.jsonl", badData);
        var jobs = new JsonArray(
            new JsonObject { ["name"] = "good", ["adapter"] = "adapter_config.json", ["data"] = TrainFixture.Data, ["out"] = "runs/good", ["batch_size"] = 2, ["steps"] = steps, ["lr"] = 0.01, ["save_steps"] = 2 },
            new JsonObject { ["name"] = "bad", ["adapter"] = "adapter_config.json", ["data"] = data, ["out"] = "runs/bad", ["batch_size"] = 2, ["steps"] = steps, ["lr"] = 0.01, ["save_steps"] = 2 });
        var file = Path.Combine(work, "jobs.json");
        File.WriteAllText(file, new JsonObject { ["jobs"] = jobs }.ToJsonString());
        Assert.AreEqual(0, Commands.Run(["build-graph", "--model", TrainFixture.Model, "--jobs", file, "--out", Path.Combine(work, "art"), "--seq-len", "32", "--micro-batch-size", "2"]));
        return (work, file);
    }

    [TestMethod]
    public void AJobWithBrokenDataStopsAloneWithItsError()
    {
        var (work, file) = TwoJobs("{\"input_ids\": [1, 5, 6]}\nnot json\n");
        var (code, err) = Fixtures.CliCapture.Run(["train", "--artifacts", Path.Combine(work, "art"), "--jobs", file, "--quiet"]);
        Assert.AreEqual(1, code, err);
        StringAssert.Contains(err, "error: job bad:");
        StringAssert.Contains(err, "bad.jsonl");
        StringAssert.Contains(err, "line 2");
        Assert.DoesNotContain("   at ", err, "no stack trace");
        Assert.IsTrue(File.Exists(Path.Combine(work, "runs", "good", "adapter", "adapter_model.safetensors")), "the other job finished");
        Assert.HasCount(4, TrainFixture.Losses(Path.Combine(work, "runs", "good")));
        Assert.IsFalse(Directory.Exists(Path.Combine(work, "runs", "bad", "adapter")), "nothing half-written for the failed job");
    }

    [TestMethod]
    public void StoppedJobsResumeToTheUninterruptedAdapters()
    {
        var (work, file) = TwoJobs(steps: 5);
        var art = Path.Combine(work, "art");
        Trainer.Jobs.JobsLoop.Run(new Trainer.Jobs.JobsOptions(art, file, Quiet: true) { StopAfter = 3 }, TextWriter.Null);
        Assert.IsFalse(Directory.Exists(Path.Combine(work, "runs", "good", "adapter")), "stopped before the end: no final adapter");
        Trainer.Jobs.JobsLoop.Run(new Trainer.Jobs.JobsOptions(art, file, Quiet: true, Resume: true), TextWriter.Null);
        var whole = Path.Combine(TestFiles.TempDir(), "jobs.json");
        File.WriteAllText(whole, File.ReadAllText(file).Replace("runs/", "whole/", StringComparison.Ordinal).Replace("\"adapter_config.json\"", $"\"{Path.Combine(work, "adapter_config.json")}\"", StringComparison.Ordinal));
        Trainer.Jobs.JobsLoop.Run(new Trainer.Jobs.JobsOptions(art, whole, Quiet: true), TextWriter.Null);
        var wdir = Path.GetDirectoryName(whole)!;
        foreach (var job in new[] { "good", "bad" })
        {
            TrainFixture.AssertSameBits(AdapterWeights.Load(Path.Combine(wdir, "whole", job, "adapter")), AdapterWeights.Load(Path.Combine(work, "runs", job, "adapter")));
            CollectionAssert.AreEqual(TrainFixture.Losses(Path.Combine(wdir, "whole", job)), TrainFixture.Losses(Path.Combine(work, "runs", job)), job);
        }
    }

    private static void AssertSameRun(string want, string got, string job)
    {
        var (a, b) = (TrainFixture.Metrics(want), TrainFixture.Metrics(got));
        Assert.HasCount(a.Length, b, $"{job}: metrics lines");
        for (var k = 0; k < a.Length; k++)
            foreach (var key in new[] { "lm_loss", "aux_loss", "loss", "eval_loss", "grad_norm" })
            {
                if (!a[k].TryGetProperty(key, out var x)) continue;
                var y = b[k].GetProperty(key).GetDouble();
                Assert.AreEqual(x.GetDouble(), y, 1e-5 * Math.Max(1e-3, Math.Abs(x.GetDouble())), $"{job}: line {k} {key}");
            }
        var (wa, wb) = (AdapterWeights.Load(Path.Combine(want, "adapter")), AdapterWeights.Load(Path.Combine(got, "adapter")));
        CollectionAssert.AreEquivalent(wa.Keys.ToArray(), wb.Keys.ToArray(), $"{job}: adapter keys");
        double diff = 0, norm = 0;
        foreach (var key in wa.Keys)
        {
            var (p, q) = (wa[key].Data, wb[key].Data);
            for (var i = 0; i < p.Length; i++) (diff, norm) = (diff + ((p[i] - q[i]) * (double)(p[i] - q[i])), norm + (p[i] * (double)p[i]));
        }
        Assert.IsLessThanOrEqualTo(1e-5, Math.Sqrt(diff / norm), $"{job}: relative L2 distance of the final adapters");
        CollectionAssert.AreEqual(Directory.GetDirectories(Path.Combine(want, "checkpoints")).Select(Path.GetFileName).ToArray(),
            Directory.GetDirectories(Path.Combine(got, "checkpoints")).Select(Path.GetFileName).ToArray(), $"{job}: checkpoints");
    }
}
