using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Adapters;

namespace MixLoRA.Trainer.Training;

/// <summary>Adapter weights in the reference key/layout: load (checked), initialize (seeded), save.</summary>
public static class AdapterStore
{
    /// <summary>Loads adapter weights and checks every trainable tensor is there with its shape.</summary>
    public static AdapterWeights CheckedLoad(string dir, IReadOnlyList<TrainableTensor> trainable) => CheckedLoad(AdapterWeights.Load(dir), dir, trainable);

    /// <summary>Checks loaded adapter weights (from <paramref name="dir"/>) hold every trainable tensor with its shape.</summary>
    public static AdapterWeights CheckedLoad(AdapterWeights w, string dir, IReadOnlyList<TrainableTensor> trainable)
    {
        foreach (var t in trainable)
        {
            if (!w.ContainsKey(t.Key)) throw Fail.User($"{dir}: adapter tensor '{t.Key}' is missing", "the adapter does not fit this model and adapter_config.json");
            var shape = w[t.Key].Shape;
            if (!shape.SequenceEqual(t.Shape))
            {
                throw Fail.User($"{dir}: adapter tensor '{t.Key}' has shape [{string.Join(", ", shape)}], the model needs [{string.Join(", ", t.Shape)}]",
                    "the adapter was trained for another model or rank");
            }
        }
        var extra = w.Keys.Except(trainable.Select(t => t.Key)).FirstOrDefault();
        if (extra != null) throw Fail.User($"{dir}: adapter tensor '{extra}' is not used by this model/config", "check target_modules, num_experts and the layer count");
        return w;
    }

    /// <summary>
    /// The reference initialization: A ~ U(±1/√in) (or N(0, 1/r)), B = 0, router ~ N(0, range), and DoRA
    /// magnitudes ‖W + s·B·A‖ per row, W read through <paramref name="frozen"/> (model key → fp32 values).
    /// </summary>
    public static AdapterWeights Initialize(IReadOnlyList<TrainableTensor> trainable, int seed, Func<string, float[]>? frozen = null)
    {
        var rng = new Random(seed);
        var w = new AdapterWeights();
        foreach (var t in trainable) w.Set(t.Key, t.Shape, t.Init == Init.DoraNorm ? new float[t.Count] : t.Initial(rng));
        FillDoraMagnitudes(w, trainable, frozen, overwrite: true);
        return w;
    }

    /// <summary>
    /// Sets DoRA magnitudes from the adapter's own A and B (as the reference does when it loads an adapter,
    /// since it never saves them): all of them, or only those <paramref name="w"/> lacks.
    /// </summary>
    public static void FillDoraMagnitudes(AdapterWeights w, IReadOnlyList<TrainableTensor> trainable, Func<string, float[]>? frozen, bool overwrite)
    {
        foreach (var t in trainable.Where(t => t.Init == Init.DoraNorm && (overwrite || !w.ContainsKey(t.Key))))
        {
            var src = t.Dora ?? throw Fail.Bug($"DoRA magnitude '{t.Key}' has no source");
            if (frozen is null) throw Fail.User($"the DoRA magnitude '{t.Key}' starts from the model's weight '{src.WeightKey}', which is not available here", "build the artifacts with mixlora-build-graph --model");
            if (!w.ContainsKey(src.AKey) || !w.ContainsKey(src.BKey)) throw Fail.User($"the DoRA magnitude '{t.Key}' needs '{src.AKey}' and '{src.BKey}'", "the adapter does not fit this adapter_config.json");
            var a = w[src.AKey];
            w.Set(t.Key, t.Shape, DoraSource.RowNorms(frozen(src.WeightKey), a.Data, w[src.BKey].Data, t.Shape[0], a.Shape[1], src.Scaling));
        }
    }

    /// <summary>Writes adapter_config.json and the weights (safetensors, and/or the reference's adapter_model.bin).</summary>
    public static void Save(string dir, AdapterConfig cfg, AdapterWeights weights, AdapterWeightFormats formats = AdapterWeightFormats.Safetensors)
    {
        Directory.CreateDirectory(dir);
        weights.Save(dir, formats);
        cfg.Save(dir);
    }
}
