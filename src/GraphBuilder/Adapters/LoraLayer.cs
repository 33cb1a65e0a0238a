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

    /// <summary>s · dropout(x) Aᵀ Bᵀ for x (N, in); A [R, in], B [out, R].</summary>
    public static Value Delta(Builder b, Value x, Value a, Value bw, LoraSettings s, Value? training)
    {
        var xd = Dropout(b, x, s.LoraDropout, training);
        var z = b.Linear(xd, a);                                            // (N, R)
        return b.Scale(b.Linear(z, bw), s.Scaling);                          // (N, out)
    }

    /// <summary>Dropout when the rate is positive (identity when training is false at run time).</summary>
    public static Value Dropout(Builder b, Value x, double rate, Value? training) =>
        rate > 0 && training != null ? b.Dropout(x, rate, training) : x;
}
