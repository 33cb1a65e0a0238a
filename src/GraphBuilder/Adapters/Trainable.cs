using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>
/// How a trainable tensor starts when no adapter weights are given. Uniform: U(±Std) (the routers of LoRAMoE,
/// MoLA and HydraLoRA, kaiming_uniform with a = √router_init_range). DoraNorm: the row norms of W + s·B·A (see
/// <see cref="DoraSource"/>), computed on the host from the model's weights.
/// </summary>
public enum Init { Zeros, KaimingUniform, Gaussian, DoraNorm, Uniform }

/// <summary>Where a DoRA magnitude starts: ‖W + s·B·A‖ per output row, W the frozen weight's model key.</summary>
public sealed record DoraSource(string WeightKey, string AKey, string BKey, double Scaling)
{
    /// <summary>‖W + s·B·A‖ per row for W [out, in], A [r, in], B [out, r] (row-major).</summary>
    public static float[] RowNorms(float[] w, float[] a, float[] bw, long outF, long inF, double s)
    {
        var r = a.Length / inF;
        var norms = new float[outF];
        for (var o = 0; o < outF; o++)
        {
            var sum = 0.0;
            for (var i = 0; i < inF; i++)
            {
                var ba = 0.0;
                for (var k = 0; k < r; k++) ba += bw[(o * r) + k] * (double)a[(k * inF) + i];
                var v = w[(o * inF) + i] + (s * ba);
                sum += v * v;
            }
            norms[o] = (float)Math.Sqrt(sum);
        }
        return norms;
    }
}

/// <summary>
/// A trainable tensor: reference key, torch [out, in] shape, initializer (std for Gaussian, the bound for Uniform; Dora for DoraNorm).
/// </summary>
public sealed record TrainableTensor(string Key, long[] Shape, Init Init, double Std = 0, DoraSource? Dora = null)
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
            case Init.Uniform:
                for (var i = 0; i < v.Length; i++) v[i] = (float)(((2 * rng.NextDouble()) - 1) * Std);
                break;
            case Init.Gaussian:
                for (var i = 0; i < v.Length; i++) v[i] = (float)(Std * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
                break;
            case Init.DoraNorm:
                throw Fail.Bug($"DoRA magnitude '{Key}' starts from the model's weights: initialize it with DoraSource.RowNorms");
        }
        return v;
    }
}

/// <summary>
/// The trainable tensors of an adapter, declared as fp32 graph inputs under their reference keys (masters
/// stay fp32; the graph casts them to the compute dtype where they are used). With a <see cref="Prefix"/>
/// (one job of several in one graph) the inputs are named PREFIX + key; <see cref="TrainableTensor.Key"/> stays
/// the reference key.
/// </summary>
public sealed class TrainableSet
{
    /// <summary>Prepended to every input name ("" for a single adapter).</summary>
    public string Prefix { get; init; } = "";

    private readonly List<TrainableTensor> _tensors = [];
    private readonly Dictionary<string, Value> _inputs = new(StringComparer.Ordinal);

    public IReadOnlyList<TrainableTensor> Tensors => _tensors;
    public IReadOnlyList<Value> Inputs => _tensors.Select(t => _inputs[t.Key]).ToArray();

    public Value Get(Builder b, TrainableTensor t, DType compute)
    {
        if (!_inputs.TryGetValue(t.Key, out var v))
        {
            v = b.Input(Prefix + t.Key, DType.Float32, Shape.Of(t.Shape));
            _inputs[t.Key] = v;
            _tensors.Add(t);
        }
        return b.Cast(v, compute);
    }
}
