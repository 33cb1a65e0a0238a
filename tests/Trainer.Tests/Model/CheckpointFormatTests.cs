using System.Text.Json.Nodes;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.Trainer.Tests.Model;

/// <summary>How real checkpoints are stored: sharded with model.safetensors.index.json, and in bf16/f16.</summary>
[TestClass]
public sealed class CheckpointFormatTests
{
    private static readonly TinyModel Model = new() { ModelType = "qwen2", Tied = true };
    private static readonly int[] Lengths = [8, 5];

    [TestMethod]
    public void ShardedCheckpointGivesTheSameLogits()
    {
        using var single = new TempDir();
        using var sharded = new TempDir();
        var w = Model.Write(single.Path);
        File.Copy(Path.Combine(single.Path, "config.json"), Path.Combine(sharded.Path, "config.json"));
        var names = w.Keys.Order(StringComparer.Ordinal).ToArray();
        var map = new JsonObject();
        for (var s = 0; s < 2; s++)
        {
            var file = $"model-0000{s + 1}-of-00002.safetensors";
            var part = names.Where((_, i) => i % 2 == s).ToArray();
            SafetensorsWriter.WriteFloats(Path.Combine(sharded.Path, file), part.Select(n => (n, w[n].Shape, w[n].Data)));
            foreach (var n in part) map[n] = file;
        }
        File.WriteAllText(Path.Combine(sharded.Path, "model.safetensors.index.json"), new JsonObject { ["weight_map"] = map }.ToJsonString());
        var rows = DecoderFamilyTests.Rows(Model, Lengths);
        CollectionAssert.AreEqual(DecoderFamilyTests.Run(single.Path, rows).Logits, DecoderFamilyTests.Run(sharded.Path, rows).Logits);
    }

    [TestMethod]
    [DataRow(DType.BFloat16)]
    [DataRow(DType.Float16)]
    public void HalfPrecisionWeightsAreWidenedExactly(DType stored)
    {
        using var dir = new TempDir();
        var w = Model.Write(dir.Path);
        SafetensorsWriter.WriteFloats(Path.Combine(dir.Path, "model.safetensors"), w.Select(p => (p.Key, p.Value.Shape, p.Value.Data)), stored);
        var rounded = w.ToDictionary(p => p.Key, p => (p.Value.Shape, TensorConvert.ToFloat32(stored, TensorConvert.FromFloat32(p.Value.Data, stored))));
        var rows = DecoderFamilyTests.Rows(Model, Lengths);
        var got = DecoderFamilyTests.Run(dir.Path, rows);
        double err = 0, scale = 0;
        for (var r = 0; r < rows.Length; r++)
        {
            var want = NaiveLlama.Forward(Model, rounded, rows[r], [.. rows[r].Select(_ => 1)]);
            for (var i = 0; i < rows[r].Length; i++)
            {
                for (var k = 0; k < Model.Vocab; k++)
                {
                    scale = Math.Max(scale, Math.Abs(want[i][k]));
                    err = Math.Max(err, Math.Abs(want[i][k] - got.Logits[(((r * got.Batch.T) + i) * Model.Vocab) + k]));
                }
            }
        }
        Assert.IsLessThanOrEqualTo(1e-4, err / scale, $"{stored} weights: {err / scale:G3}");
    }
}
