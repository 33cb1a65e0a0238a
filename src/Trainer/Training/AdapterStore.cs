using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Adapters;

namespace MixLoRA.Trainer.Training;

/// <summary>Adapter weights in the reference key/layout: load (checked), initialize (seeded), save.</summary>
public static class AdapterStore
{
    /// <summary>Loads adapter weights and checks every trainable tensor is there with its shape.</summary>
    public static AdapterWeights CheckedLoad(string dir, IReadOnlyList<TrainableTensor> trainable)
    {
        var w = AdapterWeights.Load(dir);
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

    /// <summary>The reference initialization: A ~ U(±1/√in) (or N(0, 1/r)), B = 0, router ~ N(0, range).</summary>
    public static AdapterWeights Initialize(IReadOnlyList<TrainableTensor> trainable, int seed)
    {
        var rng = new Random(seed);
        var w = new AdapterWeights();
        foreach (var t in trainable) w.Set(t.Key, t.Shape, t.Initial(rng));
        return w;
    }

    /// <summary>Writes adapter_config.json and the weights (safetensors, and/or the reference's adapter_model.bin).</summary>
    public static void Save(string dir, AdapterConfig cfg, AdapterWeights weights, AdapterWeightFormats formats = AdapterWeightFormats.Safetensors)
    {
        Directory.CreateDirectory(dir);
        weights.Save(dir, formats);
        cfg.Save(dir);
    }
}
