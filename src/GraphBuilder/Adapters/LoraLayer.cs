using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>
/// LoRA pieces shared by the adapters: the low-rank delta s·B·A·dropout(x), the reference initializers,
/// and dropout with training mode as a graph input.
/// </summary>
public static class LoraLayer
{
    public static TrainableTensor A(string key, LoraSettings s, long inF) =>
        new($"{key}.lora_A.weight", [s.R, inF], s.LoraInit == "gaussian" ? Init.Gaussian : Init.KaimingUniform, 1.0 / s.R);

    public static TrainableTensor B(string key, LoraSettings s, long outF) => new($"{key}.lora_B.weight", [outF, s.R], Init.Zeros);

    /// <summary>
    /// s · dropout(x) Aᵀ Bᵀ for x (N, in); A [R, in], B [out, R]. The scale is applied in rank space, on
    /// (N, R), so no elementwise pass (forward or backward) runs over the (N, out) output.
    /// </summary>
    public static Value Delta(Builder b, Value x, Value a, Value bw, LoraSettings s, Value? training)
    {
        var xd = Dropout(b, x, s.LoraDropout, training);
        var z = b.Scale(b.Linear(xd, a), s.Scaling);                        // (N, R)
        return b.Linear(z, bw);                                              // (N, out)
    }

    /// <summary>
    /// The DoRA magnitude of a LoRA layer: one value per output row, key `{key}.lora_magnitude_vector` (PEFT's
    /// name; the reference keeps it as `magnitude_vector_` and never saves it), starting at ‖W + s·B·A‖.
    /// </summary>
    public static TrainableTensor Magnitude(string key, LoraSettings s, string weightKey, long outF) =>
        new($"{key}.lora_magnitude_vector", [outF], Init.DoraNorm, Dora: new DoraSource(weightKey, $"{key}.lora_A.weight", $"{key}.lora_B.weight", s.Scaling));

    /// <summary>‖W + s·B·A‖ per output row (out), fp32 (fp64 for fp64 A) and detached (no gradient flows through it).</summary>
    public static Value WeightNorm(Builder b, Value w, Value a, Value bw, double scaling)
    {
        var f32 = a.DType == DType.Float64 ? DType.Float64 : DType.Float32;                                 // fp32 at least
        var merged = b.Add(b.Cast(w, f32), b.Scale(b.MatMul(b.Cast(bw, f32), b.Cast(a, f32)), scaling));   // (out, in)
        return b.StopGradient(b.Sqrt(b.ReduceSum(b.Mul(merged, merged), [1])));                            // (out)
    }

    /// <summary>
    /// DoRA's output as a delta on the frozen output y (N, out): with c = m / ‖W + s·B·A‖ (detached norm),
    /// c ⊙ (y + Δ) − y = (c − 1) ⊙ y + c ⊙ Δ, so that y + this = c ⊙ (W x + s·B·A·dropout(x)).
    /// </summary>
    public static Value DoraDelta(Builder b, Value y, Value delta, Value m, Value norm)
    {
        var c = b.Cast(b.Div(b.Cast(m, norm.DType), norm), y.DType);                                  // (out)
        return b.Add(b.Mul(b.AddScalar(c, -1), y), b.Mul(c, delta));
    }

    /// <summary>Dropout when the rate is positive (identity when training is false at run time).</summary>
    public static Value Dropout(Builder b, Value x, double rate, Value? training) =>
        rate > 0 && training != null ? b.Dropout(x, rate, training) : x;
}
