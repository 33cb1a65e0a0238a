using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Trainer.Distributed;

/// <summary>
/// What every rank of a data-parallel run must share, as "key=value" lines the rendezvous compares (a difference is
/// refused naming its key): the program, the artifacts (manifest.json's hash, the model's fingerprint), the training
/// records (count and a hash of their ids and labels) and every option that changes the computation.
/// </summary>
public static class RunDescription
{
    public static string Of(TrainOptions o, string manifestFile, string modelFingerprint, IReadOnlyList<Example> examples, long total)
    {
        var lines = new (string Key, object? Value)[]
        {
            ("program", typeof(RunDescription).Assembly.GetName().Version),
            ("artifacts.manifest", Hash(File.ReadAllBytes(manifestFile))),
            ("model.fingerprint", modelFingerprint),
            ("data.records", examples.Count),
            ("data.hash", DataHash(examples)),
            ("steps", total), ("batch_size", o.BatchSize), ("micro_batch_size", o.MicroBatchSize), ("packing", o.Packing),
            ("lr", o.Lr), ("weight_decay", o.WeightDecay), ("lr_scheduler", o.LrScheduler), ("warmup_steps", o.WarmupSteps),
            ("max_grad_norm", o.MaxGradNorm), ("shuffle", o.Shuffle), ("group_by_length", o.GroupByLength), ("seed", o.Seed),
            ("device", o.Device), ("cuda_graph", o.CudaGraph), ("resume", o.Resume), ("save_steps", o.SaveSteps), ("eval_steps", o.EvalSteps),
        };
        return string.Join("\n", lines.Select(l => $"{l.Key}={Convert.ToString(l.Value, CultureInfo.InvariantCulture) ?? "-"}"));
    }

    private static string DataHash(IReadOnlyList<Example> examples)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var e in examples)
        {
            h.AppendData(BitConverter.GetBytes(e.InputIds.Length));
            h.AppendData(MemoryMarshal.AsBytes(e.InputIds.AsSpan()));
            h.AppendData(MemoryMarshal.AsBytes(e.Labels.AsSpan()));
        }
        return Convert.ToHexStringLower(h.GetHashAndReset())[..16];
    }

    private static string Hash(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes))[..16];
}
