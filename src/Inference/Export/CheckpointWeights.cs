using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;

namespace MixLoRA.Inference.Export;

/// <summary>
/// Frozen weights as initializers read from the model's safetensors, in the export dtype. Tensors already in
/// that dtype are views of the memory map; others are converted when the ONNX writer reads them; attention
/// projections with a merged LoRA (<see cref="AttentionMerge"/>) are computed W + s·B·A in fp32 at that moment.
/// </summary>
public sealed class CheckpointWeights(SafetensorsModel model, DType dtype, AttentionMerge? merge = null) : IWeightSource
{
    private readonly Dictionary<string, Value> _declared = new(StringComparer.Ordinal);

    public DType DType => dtype;

    public Value Get(Builder b, string key, long[] shape)
    {
        if (_declared.TryGetValue(key, out var v)) return v;
        if (!model.Contains(key))
        {
            throw Fail.User($"{model.Folder}: tensor '{key}' is missing", "the checkpoint does not match config.json (or is not a LLaMA-family model)");
        }
        var info = model.Info(key);
        if (!info.Shape.SequenceEqual(shape))
        {
            throw Fail.User($"{model.Folder}: tensor '{key}' has shape [{string.Join(", ", info.Shape)}], the model needs [{string.Join(", ", shape)}]",
                "check that config.json belongs to these weights");
        }
        v = b.Initializer(new TensorData(key, dtype, [.. shape], Bytes(key, info)));
        _declared[key] = v;
        return v;
    }

    private unsafe ReadOnlyMemory<byte> Bytes(string key, SafetensorsTensorInfo info)
    {
        var length = info.Count * dtype.ByteSize();
        if (length > int.MaxValue)
        {
            throw Fail.User($"{model.Folder}: tensor '{key}' would be {length} bytes in {dtype.Name()}, over the 2 GiB a single ONNX initializer can hold here",
                "export in float16 or bfloat16");
        }
        if (merge?.DeltaFor(key) is { } delta)
        {
            return TensorMemory.Computed((int)length, () => TensorConvert.FromFloat32(delta(model.ReadFloat32(key)), dtype));
        }
        if (info.DType == dtype) return TensorMemory.Mapped(model.FileOf(key).Pointer(key), (int)length);
        return TensorMemory.Computed((int)length, () => TensorConvert.FromFloat32(model.ReadFloat32(key), dtype));
    }
}

/// <summary>
/// Attention LoRA folded into the base weights: W' = W + s·B·A for each targeted q/k/v/o projection, computed on
/// the host in fp32 from the adapter's keys (MIXLORA <c>mixlora.layers.{l}.self_attn.{m}.lora_{A,B}.weight</c>, LORAMOE
/// <c>loramoe.layers…</c>, LORA the PEFT keys <c>base_model.model.model.layers.{l}.self_attn.{m}...</c>; MOLA and HYDRALORA
/// route their attention projections, which do not fold).
/// </summary>
public sealed class AttentionMerge(AdapterWeights weights, AdapterConfig cfg, string source)
{
    public static readonly string[] AttentionModules = ["q_proj", "k_proj", "v_proj", "o_proj"];

    /// <summary>The key of a LoRA matrix of an attention projection, as <see cref="AdapterGraph"/> names it.</summary>
    public static string LoraKey(AdapterConfig cfg, int layer, string module, char ab) =>
        $"{cfg.KeyPrefix}.layers.{layer}.self_attn.{module}.lora_{ab}.weight";

    /// <summary>For <c>model.layers.{l}.self_attn.{m}.weight</c> of a merged module: W ↦ W + s·B·A (in place), else null.</summary>
    public Func<float[], float[]>? DeltaFor(string baseKey)
    {
        var parts = baseKey.Split('.');
        if (parts.Length != 6 || parts[0] != "model" || parts[1] != "layers" || parts[3] != "self_attn" || parts[5] != "weight") return null;
        if (!AttentionModules.Contains(parts[4]) || !cfg.Targets(parts[4]) || !int.TryParse(parts[2], out var layer)) return null;
        var (ka, kb) = (LoraKey(cfg, layer, parts[4], 'A'), LoraKey(cfg, layer, parts[4], 'B'));
        foreach (var k in new[] { ka, kb })
        {
            if (!weights.ContainsKey(k)) throw Fail.InFile(source, $"tensor '{k}'", "missing", "the adapter targets this projection, so its LoRA pair must be in the file");
        }
        return w => Merge(w, weights[ka], weights[kb], baseKey);
    }

    private float[] Merge(float[] w, (DType _, long[] Shape, float[] Data) a, (DType _, long[] Shape, float[] Data) bm, string key)
    {
        var (r, inF, outF) = ((int)a.Shape[0], (int)a.Shape[1], (int)bm.Shape[0]);
        if (bm.Shape[1] != r || (long)outF * inF != w.Length)
        {
            throw Fail.InFile(source, $"LoRA of '{key}'", $"A [{string.Join(", ", a.Shape)}] and B [{string.Join(", ", bm.Shape)}] do not fit the weight of {w.Length} values",
                "the adapter was trained for another model");
        }
        var scale = cfg.Scaling;
        var row = new float[inF];
        for (var o = 0; o < outF; o++)
        {
            Array.Clear(row);
            for (var k = 0; k < r; k++)
            {
                var coef = (float)(scale * bm.Data[(o * r) + k]);
                if (coef == 0) continue;
                var ak = a.Data.AsSpan(k * inF, inF);
                for (var i = 0; i < inF; i++) row[i] += coef * ak[i];
            }
            var wo = w.AsSpan(o * inF, inF);
            for (var i = 0; i < inF; i++) wo[i] += row[i];
        }
        return w;
    }
}

/// <summary>An adapter whose q/k/v/o LoRA was merged into the base weights: it adds no attention delta.</summary>
public sealed class WithoutAttentionLora(IAdapter inner) : IAdapter
{
    public Value? LinearDelta(Builder b, LinearSite site, Value x) =>
        AttentionMerge.AttentionModules.Contains(site.Module) ? null : inner.LinearDelta(b, site, x);

    public Value? Mlp(Builder b, MlpSite site, Value x) => inner.Mlp(b, site, x);
}
