using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.Runtime;
using MixLoRA.Trainer.Model;

namespace MixLoRA.Inference.Tests.Fixtures;

/// <summary>Repository paths, the shared parity data and temp folders.</summary>
internal static class Files
{
    public static string RepoRoot() => MixLoRA.Tests.TestRepo.Root;

    public static string Samples => Path.Combine(RepoRoot(), "tests", "Trainer.Tests", "Data", "samples");

    /// <summary>shared/parity/CASE above the repository; a missing folder fails the test (it is the definition of correct).</summary>
    public static string Parity(string caseName = "llama-basic") =>
        MixLoRA.Tests.TestRepo.FindParity(caseName) ?? throw new AssertFailedException($"shared/parity/{caseName} not found above {RepoRoot()}");

    public static string ParityModel => Path.Combine(Parity(), "model");

    public static string TempDir()
    {
        return MixLoRA.Tests.TestRepo.NewTempDir("mixlora-inference-tests");
    }
}

/// <summary>Independent reference: the training-side forward graph (ForwardGraph.Logits) run on ORT CPU.</summary>
internal static class Reference
{
    /// <summary>Logits (B, T, V) of the forward graph for right-padded ids; adapter inputs come from <paramref name="adapterFeeds"/>.</summary>
    public static float[] ForwardLogits(string modelDir, long[] ids, long[] mask, int batch, IAdapter? adapter = null,
        IReadOnlyDictionary<string, HostTensor>? adapterFeeds = null)
    {
        var t = ids.Length / batch;
        var cfg = ModelConfig.Load(modelDir);
        var fwd = ForwardGraph.Logits(cfg, new Shapes(batch, t), DType.Float32, DType.Float32, adapter);
        using var model = new SafetensorsModel(modelDir);
        var feeds = WeightLoader.LoadHost(model, fwd.Weights.Declared);
        foreach (var (k, v) in adapterFeeds ?? new Dictionary<string, HostTensor>()) feeds[k] = v;
        feeds["input_ids"] = HostTensor.Of(ids, batch, t);
        feeds["attention_mask"] = HostTensor.Of(mask, batch, t);
        using var runner = new GraphRunner(OrtRuntime.Cpu, fwd.Graph!);
        return runner.Run(feeds)["logits"].Floats();
    }

    /// <summary>max |a − b| over real tokens / max |a| there.</summary>
    public static double MaxRelAtRealTokens(float[] want, float[] got, long[] mask, int vocab)
    {
        double err = 0, scale = 1e-30;
        for (var row = 0; row < mask.Length; row++)
        {
            if (mask[row] == 0) continue;
            for (var k = 0; k < vocab; k++)
            {
                var i = (row * vocab) + k;
                scale = Math.Max(scale, Math.Abs(want[i]));
                err = Math.Max(err, Math.Abs(want[i] - got[i]));
            }
        }
        return err / scale;
    }
}
