using System.Runtime.InteropServices;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;

namespace MixLoRA.Trainer.Model;

/// <summary>
/// Reads the frozen weights a graph declares from the model's safetensors, checking each shape, and
/// converts them to the graph's dtype.
/// </summary>
public static class WeightLoader
{
    /// <summary>Checks every declared weight exists with the declared shape; errors name tensor and shapes.</summary>
    public static void Validate(SafetensorsModel model, IReadOnlyDictionary<string, Value> declared)
    {
        foreach (var (key, v) in declared)
        {
            if (!model.Contains(key))
            {
                throw Fail.User($"{model.Folder}: tensor '{key}' is missing", "the checkpoint does not match config.json (or is not a LLaMA-family model)");
            }
            var info = model.Info(key);
            var want = v.S.ToLongs();
            if (!info.Shape.SequenceEqual(want))
            {
                throw Fail.User($"{model.Folder}: tensor '{key}' has shape [{string.Join(", ", info.Shape)}], the graph needs [{string.Join(", ", want)}]",
                    "check that config.json belongs to these weights");
            }
        }
    }

    /// <summary>All declared weights as host tensors in their declared dtype.</summary>
    public static Dictionary<string, HostTensor> LoadHost(SafetensorsModel model, IReadOnlyDictionary<string, Value> declared)
    {
        Validate(model, declared);
        return declared.ToDictionary(p => p.Key, p => Load(model, p.Key, p.Value.DType));
    }

    public static HostTensor Load(SafetensorsModel model, string key, DType dtype)
    {
        var info = model.Info(key);
        if (info.DType == dtype) return new HostTensor(dtype, info.Shape, model.Bytes(key).ToArray());
        var f = model.ReadFloat32(key);
        return new HostTensor(dtype, info.Shape, TensorConvert.FromFloat32(f, dtype));
    }
}
