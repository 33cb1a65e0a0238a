namespace MixLoRA.Trainer.Data;

/// <summary>
/// The order in which one epoch visits the records: identity, or a Fisher–Yates shuffle driven by a
/// SplitMix64 stream seeded from (seed, epoch) alone, optionally then stably sorted by length, longest
/// first (the reference's group_by_length: `sort(key=len(tokens), reverse=True)`).
/// The algorithm is spelled out here so that other tools can reproduce it:
/// state = Mix(seed ^ Mix(epoch + γ)), next() = Mix(state += γ) with γ = 0x9E3779B97F4A7C15 and Mix the
/// SplitMix64 finalizer; for i = n−1 … 1: j = uniform in [0, i] by rejection (r ≥ 2^64 mod (i+1)), swap.
/// </summary>
public static class EpochOrder
{
    const ulong Gamma = 0x9E3779B97F4A7C15UL;

    public static int[] Compute(int count, long seed, long epoch, bool shuffle, IReadOnlyList<int>? groupByLengths = null)
    {
        var order = Enumerable.Range(0, count).ToArray();
        if (shuffle) Shuffle(order, seed, epoch);
        if (groupByLengths is not null)
        {
            var lengths = groupByLengths;
            // LINQ OrderBy is a stable sort: ties keep the (shuffled or file) order.
            order = order.OrderByDescending(i => lengths[i]).ToArray();
        }
        return order;
    }

    static void Shuffle(int[] order, long seed, long epoch)
    {
        ulong state = Mix((ulong)seed ^ Mix((ulong)epoch + Gamma));
        for (int i = order.Length - 1; i > 0; i--)
        {
            ulong bound = (ulong)(i + 1);
            ulong threshold = (0UL - bound) % bound;
            ulong r;
            do { state += Gamma; r = Mix(state); } while (r < threshold);
            int j = (int)(r % bound);
            (order[i], order[j]) = (order[j], order[i]);
        }
    }

    static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
