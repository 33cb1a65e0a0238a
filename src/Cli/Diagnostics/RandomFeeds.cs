using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.Runtime;

namespace MixLoRA.Cli.Diagnostics;

/// <summary>Random inputs for running graphs in the diagnostics (values only need to be valid, not meaningful).</summary>
internal static class RandomFeeds
{
    /// <summary>
    /// A tensor for <paramref name="v"/>: int64 in [intLow, intHigh) (an `attention_mask` is all ones), bools
    /// false (training off), floats uniform in ±<paramref name="scale"/>.
    /// </summary>
    public static HostTensor For(Value v, Random rng, int intLow, int intHigh, double scale)
    {
        var shape = v.S.ToLongs();
        var n = (int)shape.Aggregate(1L, (a, b) => a * b);
        return v.DType switch
        {
            DType.Int64 => HostTensor.Of(Enumerable.Range(0, n).Select(_ => v.Name == "attention_mask" ? 1L : rng.Next(intLow, intHigh)).ToArray(), shape),
            DType.Bool => HostTensor.Of(new bool[n], shape),
            _ => new HostTensor(v.DType, shape, TensorConvert.FromFloat32(Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() - 0.5) * 2 * scale)).ToArray(), v.DType)),
        };
    }
}
