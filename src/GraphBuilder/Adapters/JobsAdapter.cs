using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>
/// Several adapters over one frozen base in one graph (issue 21, the m-LoRA setting): the micro-batch's rows
/// belong to jobs in blocks of R rows (job j: rows j·R … (j+1)·R − 1, tokens j·R·T … in the flattened (N, D)
/// activations). Every frozen projection runs once over all rows; each job's LoRA delta is computed on its own
/// block and the blocks are stacked back. A block whose job replaces the MLP (MixLoRA) runs that job's MoE on the
/// block; the other blocks run the dense MLP with their job's LoRA.
/// <code>
///  x (N, in) ─┬─ frozen W (once) ─────────────────────────────(+)─ y (N, out)
///             ├─ rows of job 0 ─ Δ₀ ─┐                         │
///             ├─ rows of job 1 ─ Δ₁ ─┼─ concat (N, out) ───────┘
///             └─ …                   ┘
/// </code>
/// </summary>
public sealed class JobsAdapter(IReadOnlyList<AdapterGraph> jobs, int rowsPerJob) : IAdapter
{
    public IReadOnlyList<AdapterGraph> Jobs => jobs;

    /// <summary>Rows (and, times T, tokens) of job <paramref name="j"/>: [j·R·per, (j+1)·R·per) along axis 0.</summary>
    private Value Block(Builder b, Value x, int j, long per = 1)
    {
        var n = rowsPerJob * per;
        return b.Slice(x, [j * n], [(j + 1) * n], [0]);
    }

    private long TokensPerRow(Value flat) =>
        flat.S[0].IsStatic ? flat.S[0].Value / (jobs.Count * (long)rowsPerJob) : throw Fail.Bug($"jobs need static shapes; got {flat}");

    public Value? LinearDelta(Builder b, LinearSite site, Value x)
    {
        var t = TokensPerRow(x);
        var deltas = new Value?[jobs.Count];
        for (var j = 0; j < jobs.Count; j++)
        {
            var sj = site with { Base = site.Base is { } y ? Block(b, y, j, t) : null };
            deltas[j] = jobs[j].LinearDelta(b, sj, Block(b, x, j, t));                         // (R·T, out) or null
        }
        if (deltas.All(d => d is null)) return null;
        var frozen = site.Base ?? throw Fail.Bug($"jobs need the frozen output of {site.Key}");
        return b.Concat(0, deltas.Select((d, j) => d ?? b.ZerosLike(Block(b, frozen, j, t))).ToArray());   // (N, out)
    }

    public Value? Mlp(Builder b, MlpSite site, Value x)
    {
        var t = TokensPerRow(x);
        var sites = Enumerable.Range(0, jobs.Count).Select(j => site with
        {
            TokenMask = Block(b, site.TokenMask, j, t),                                       // (R·T) this job's real tokens
            InputIds = site.InputIds is { } ids ? Block(b, ids, j) : null,                    // (R, T)
        }).ToArray();
        // every job sees its block's token mask (routed methods pool their losses over it); only MoE jobs use x
        var moe = jobs.Select((job, j) => job.Mlp(b, sites[j], job.Config.IsMixLora ? Block(b, x, j, t) : x)).ToArray();
        if (moe.All(y => y is null)) return null;                                              // the decoder's dense MLP, with LinearDelta
        return b.Concat(0, moe.Select((y, j) => y ?? DenseMlp(b, jobs[j], sites[j], Block(b, x, j, t))).ToArray());   // (N, D)
    }

    /// <summary>act(gate) ⊙ up → down with the job's LoRA on each targeted projection (Phi-3: gate_up in one).</summary>
    private static Value DenseMlp(Builder b, AdapterGraph job, MlpSite site, Value x)
    {
        var (d, f) = (site.Hidden, site.Intermediate);
        Value Proj(string module, Value v, long inF, long outF)
        {
            var y = site.Frozen(module, v);
            var ls = new LinearSite(site.Layer, module, $"{site.Key}.{module}", inF, outF, site.Weight?.Invoke(module), y);
            return job.LinearDelta(b, ls, v) is { } delta ? b.Add(y, delta) : y;
        }
        Value gate, up;
        if (site.FusedGateUp)
        {
            var gu = b.Split(Proj("gate_up_proj", x, d, 2 * f), -1, f, f);
            (gate, up) = (gu[0], gu[1]);
        }
        else
        {
            (gate, up) = (Proj("gate_proj", x, d, f), Proj("up_proj", x, d, f));
        }
        return Proj("down_proj", b.Mul(site.Act(gate), up), f, d);
    }
}
