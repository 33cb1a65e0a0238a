using System.Collections.Concurrent;
using System.Text.Json;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Trainer.Tests.Training;

/// <summary>
/// Artifacts of the shared parity model (`shared/parity/llama-basic`, 2 layers, hidden 64) built once per
/// (adapter, micro-batch) and reused by the training tests; helpers to run training and read its outputs.
/// </summary>
internal static class TrainFixture
{
    private static readonly ConcurrentDictionary<string, Lazy<string>> Built = new(StringComparer.Ordinal);

    public static string ParityDir => TestFiles.Parity("llama-basic") ?? throw new AssertFailedException("shared/parity/llama-basic not found");

    public static string Model => Path.Combine(ParityDir, "model");

    public static string Data => Path.Combine(ParityDir, "data.jsonl");

    /// <summary>Artifacts for the parity model with <paramref name="adapter"/> (default: the parity adapter_init).</summary>
    public static string Artifacts(string? adapter = null, int micro = 2, int seqLen = 64)
    {
        adapter ??= Path.Combine(ParityDir, "adapter_init");
        var key = $"{adapter}|{micro}|{seqLen}";
        return Built.GetOrAdd(key, _ => new Lazy<string>(() =>
        {
            var dir = Path.Combine(TestFiles.TempDir(), "artifacts");
            ArtifactsBuilder.Build(new BuildOptions(Model, adapter, dir, seqLen, micro));
            return dir;
        })).Value;
    }

    /// <summary>Options training the parity data from <paramref name="artifacts"/> into <paramref name="output"/>.</summary>
    public static TrainOptions Options(string artifacts, string output, int steps, int batch = 2) => new()
    {
        Artifacts = artifacts, Data = [new DataSource(Data)], Out = output, BatchSize = batch, Steps = steps, Lr = 0.01, Quiet = true,
    };

    /// <summary>Writes an adapter_config.json into a fresh folder and returns the file.</summary>
    public static string AdapterConfigFile(object config)
    {
        var path = Path.Combine(TestFiles.TempDir(), "adapter_config.json");
        File.WriteAllText(path, JsonSerializer.Serialize(config));
        return path;
    }

    /// <summary>The lines of OUT/metrics.jsonl as JSON elements.</summary>
    public static JsonElement[] Metrics(string output) =>
        File.ReadAllLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToArray();

    /// <summary>Per-step lm_loss values (training lines only).</summary>
    public static double[] Losses(string output) =>
        Metrics(output).Where(e => e.TryGetProperty("lm_loss", out _)).Select(e => e.GetProperty("lm_loss").GetDouble()).ToArray();

    /// <summary>Asserts two adapters hold the same keys (in any order), shapes and float bits.</summary>
    public static void AssertSameBits(AdapterWeights want, AdapterWeights got)
    {
        CollectionAssert.AreEquivalent(want.Keys.ToArray(), got.Keys.ToArray());
        foreach (var k in want.Keys)
        {
            CollectionAssert.AreEqual(want[k].Shape, got[k].Shape, k);
            var (a, b) = (want[k].Data, got[k].Data);
            for (var i = 0; i < a.Length; i++)
            {
                if (BitConverter.SingleToInt32Bits(a[i]) != BitConverter.SingleToInt32Bits(b[i]))
                    Assert.Fail($"{k}[{i}]: {a[i]:R} != {b[i]:R}");
            }
        }
    }
}
