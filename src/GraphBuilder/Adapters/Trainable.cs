using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>How a trainable tensor starts when no adapter weights are given.</summary>
public enum Init { Zeros, KaimingUniform, Gaussian }

/// <summary>A trainable tensor: reference key, torch [out, in] shape, initializer (std for Gaussian).</summary>
public sealed record TrainableTensor(string Key, long[] Shape, Init Init, double Std = 0)
{
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>Seeded initial values, as the reference initializes (kaiming_uniform(a=√5) = U(±1/√in)).</summary>
    public float[] Initial(Random rng)
    {
        var v = new float[Count];
        switch (Init)
        {
            case Init.KaimingUniform:
                var bound = 1.0 / Math.Sqrt(Shape[^1]);
                for (var i = 0; i < v.Length; i++) v[i] = (float)(((2 * rng.NextDouble()) - 1) * bound);
                break;
            case Init.Gaussian:
                for (var i = 0; i < v.Length; i++) v[i] = (float)(Std * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
                break;
        }
        return v;
    }
}

/// <summary>
/// The trainable tensors of an adapter, declared as fp32 graph inputs under their reference keys (masters
/// stay fp32; the graph casts them to the compute dtype where they are used).
/// </summary>
public sealed class TrainableSet
{
    private readonly List<TrainableTensor> _tensors = [];
    private readonly Dictionary<string, Value> _inputs = new(StringComparer.Ordinal);

    public IReadOnlyList<TrainableTensor> Tensors => _tensors;
    public IReadOnlyList<Value> Inputs => _tensors.Select(t => _inputs[t.Key]).ToArray();

    public Value Get(Builder b, TrainableTensor t, DType compute)
    {
        if (!_inputs.TryGetValue(t.Key, out var v))
        {
            v = b.Input(t.Key, DType.Float32, Shape.Of(t.Shape));
            _inputs[t.Key] = v;
            _tensors.Add(t);
        }
        return b.Cast(v, compute);
    }
}
