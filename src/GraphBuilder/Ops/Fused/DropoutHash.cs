namespace MixLoRA.GraphBuilder.Ops;

/// <summary>
/// The counter-based hash of the fused kernels' dropout (<see cref="SwiGluSlotsOps"/>, <see cref="SlotLoraOps"/>): every
/// kernel, C# or CUDA, draws the same mask from (seed, salt, element index), so the backward and a recomputed forward
/// regenerate it instead of storing it.
/// </summary>
public static class DropoutHash
{
    /// <summary>
    /// Whether dropout keeps element <paramref name="i"/>: splitmix64 of (seed, salt, i), top 24 bits as a
    /// uniform in [0, 1), kept when ≥ ratio. The CUDA kernels compute the same bits.
    /// </summary>
    public static bool Keep(long seed, long salt, long i, double ratio) => (float)Bits(Start(seed, salt), i) * (1f / 16777216f) >= (float)ratio;

    /// <summary>splitmix64's state for (seed, salt) at element 0; element i's is this + i.</summary>
    public static ulong Start(long seed, long salt) => unchecked(((ulong)seed * 0x9E3779B97F4A7C15UL) + ((ulong)salt * 0xD1B54A32D192ED03UL));

    /// <summary>The top 24 bits of splitmix64's output for element <paramref name="i"/> (an integer in [0, 2²⁴)).</summary>
    public static ulong Bits(ulong start, long i)
    {
        unchecked
        {
            var z = start + (ulong)i;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return (z ^ (z >> 31)) >> 40;
        }
    }

    /// <summary>
    /// The integer form of <see cref="Keep"/>'s test: Bits ≥ Threshold(ratio) exactly when Bits·2⁻²⁴ ≥ (float)ratio
    /// (both sides are exact in float64), so a loop can compare integers.
    /// </summary>
    public static ulong Threshold(double ratio) => (ulong)Math.Ceiling((double)(float)ratio * 16777216.0);
}
