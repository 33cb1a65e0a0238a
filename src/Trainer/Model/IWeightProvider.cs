using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.Runtime;

namespace MixLoRA.Trainer.Model;

/// <summary>
/// Where the frozen weights a training graph declares come from: a checkpoint's safetensors, or random
/// values of the right shape (benchmarks). <see cref="Training.StepRunner"/> asks for each weight once and
/// uploads it, so a provider may produce tensors one at a time.
/// </summary>
public interface IWeightProvider
{
    /// <summary>Checks every declared weight can be provided with its declared shape; errors name tensor and shapes.</summary>
    void Validate(IReadOnlyDictionary<string, Value> declared);

    /// <summary>The weight under this HF key, in <paramref name="dtype"/> with <paramref name="shape"/>.</summary>
    HostTensor Load(string key, DType dtype, long[] shape);
}

/// <summary>Weights read from a Hugging Face model folder's safetensors (converted to the graph's dtype).</summary>
public sealed class SafetensorsWeights(string modelDir) : IWeightProvider, IDisposable
{
    private readonly SafetensorsModel _model = new(modelDir);

    public void Validate(IReadOnlyDictionary<string, Value> declared) => WeightLoader.Validate(_model, declared);

    public HostTensor Load(string key, DType dtype, long[] shape) => WeightLoader.Load(_model, key, dtype);

    public void Dispose() => _model.Dispose();
}
