using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.Runtime;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Model;
using MixLoRA.Trainer.Tests.Data;

namespace MixLoRA.Trainer.Tests.Model;

/// <summary>The base decoder against the reference's logits (shared/parity/llama-basic/expected/logits_base).</summary>
[TestClass]
public sealed class BaseParityTests
{
    [TestMethod]
    public void BaseLogitsMatchTheReference()
    {
        var dir = TestFiles.Parity("llama-basic");
        Assert.IsNotNull(dir, "shared/parity/llama-basic not found");
        var err = MaxLogitError(dir);
        Assert.IsLessThanOrEqualTo(1e-4, err, $"max |Δlogit| / max |logit| = {err:G3}");
    }

    /// <summary>
    /// The forward graph of the case's model on ORT CPU against expected/logits_base.safetensors (a right-padded
    /// batch): max |Δlogit| over real tokens / max |logit|.
    /// </summary>
    internal static double MaxLogitError(string dir)
    {
        using var expected = new SafetensorsFile(Path.Combine(dir, "expected", "logits_base.safetensors"));
        var ids = expected.ReadInt64("input_ids");
        var mask = expected.ReadInt64("attention_mask");
        var want = expected.ReadFloat32("logits");
        var shape = expected.Info("logits").Shape;
        var (n, t, v) = ((int)shape[0], (int)shape[1], (int)shape[2]);

        var cfg = ModelConfig.Load(Path.Combine(dir, "model"));
        var fwd = ForwardGraph.Logits(cfg, new Shapes(n, t), DType.Float32, DType.Float32);
        using var model = new SafetensorsModel(Path.Combine(dir, "model"));
        var feeds = WeightLoader.LoadHost(model, fwd.Weights.Declared);
        feeds["input_ids"] = HostTensor.Of(ids, n, t);
        feeds["attention_mask"] = HostTensor.Of(mask, n, t);
        using var runner = new GraphRunner(OrtRuntime.Cpu, fwd.Graph!);
        var got = runner.Run(feeds)["logits"].Floats();
        return Compare.MaxErrorAtRealTokens(want, got, mask, t, v);
    }
}

/// <summary>Tolerance checks shared by parity tests (relative to the largest magnitude of the expected tensor).</summary>
public static class Compare
{
    public static double MaxErrorAtRealTokens(float[] want, float[] got, long[] mask, int t, int v)
    {
        var scale = want.Max(Math.Abs);
        var err = 0.0;
        for (var row = 0; row < mask.Length; row++)
        {
            if (mask[row] == 0) continue;
            for (var k = 0; k < v; k++) err = Math.Max(err, Math.Abs(want[(row * v) + k] - got[(row * v) + k]));
        }
        return err / scale;
    }

    public static double MaxRelative(float[] want, float[] got)
    {
        var scale = Math.Max(want.Max(Math.Abs), 1e-30);
        return want.Zip(got).Max(p => Math.Abs(p.First - p.Second)) / scale;
    }
}
