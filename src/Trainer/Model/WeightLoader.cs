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

    /// <summary>
    /// The weight under <paramref name="key"/> in <paramref name="dtype"/>, refused when it holds NaN or ±Inf (one pass
    /// over its bytes): a model broken so would make the first loss non-finite and be blamed on --lr.
    /// </summary>
    public static HostTensor Load(SafetensorsModel model, string key, DType dtype)
    {
        var info = model.Info(key);
        CheckFinite(model, key, info);
        if (info.DType == dtype) return new HostTensor(dtype, info.Shape, model.Bytes(key).ToArray());
        var converted = TensorConvert.FromFloat32(model.ReadFloat32(key), dtype);
        var overflow = NonFinite.Count(dtype, converted);
        if (overflow > 0)
        {
            throw Fail.User(FormattableString.Invariant($"{key} in {model.FileOf(key).Path} does not fit {dtype.Name()}: {overflow:N0} values overflow to infinity"),
                "build the graphs with --dtype bfloat16 or float32");
        }
        return new HostTensor(dtype, info.Shape, converted);
    }

    /// <summary>Throws naming the tensor, its file and the count when the stored values of <paramref name="key"/> are not all finite.</summary>
    public static void CheckFinite(SafetensorsModel model, string key, SafetensorsTensorInfo info)
    {
        var bad = NonFinite.Count(info.DType, model.Bytes(key));
        if (bad == 0) return;
        var total = info.Shape.Aggregate(1L, (a, b) => a * b);
        throw Fail.User(FormattableString.Invariant($"the base weights hold non-finite values: {key} in {model.FileOf(key).Path} ({bad:N0} of {total:N0} values are NaN or infinite)"),
            "the checkpoint is damaged or was saved from a diverged run: download or convert the model again (this is not a learning-rate problem)");
    }
}
