using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder;
using MixLoRA.Runtime;
using MixLoRA.Runtime.Collectives;
using MixLoRA.Trainer.Data;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Trainer.Distributed;

/// <summary>
/// One rank of a data-parallel run. Every rank builds each step's micro-batches (host work only, the same global
/// batch and order as one process) and runs micro-batch i when i mod N is its rank; the token shares are the whole
/// step's, so the sum of the ranks' gradients is the single-process step's gradient. The flat gradient buffer is
/// summed over the ranks (<see cref="ICollective.AllReduceSum(OrtValue, long, bool)"/>) before the optimizer, which
/// then runs alike on every rank; the loss sums and router load are summed too, so every rank sees the step's
/// losses. A rank with no micro-batch in a step adds zeros. Rank 0 hands out the starting point (its checkpoint)
/// and state at start-up; it alone writes metrics, checkpoints and the adapter.
/// </summary>
public sealed class DataParallel : IStepShare, IDisposable
{
    private readonly ICollective _c;

    public DataParallel(ICollective collective) => _c = collective;

    public int Rank => _c.Rank;
    public int WorldSize => _c.WorldSize;

    /// <summary>Whether this rank writes the run's outputs (rank 0).</summary>
    public bool Writes => Rank == 0;

    public ICollective Collective => _c;

    /// <summary>This rank's stop request (2 SIGINT, 15 SIGTERM, 0 none), read at every step's reduction.</summary>
    public Func<int> LocalStop { get; set; } = () => 0;

    /// <summary>The stop every rank agreed on at the last step (any rank's request; SIGINT before SIGTERM), or 0.</summary>
    public int AgreedStop { get; private set; }

    /// <summary>Rendezvous as <paramref name="me"/>, then the collective: NCCL for CUDA (GPU LOCAL_RANK), TCP for the CPU.</summary>
    public static DataParallel Join(RankInfo me, Device device, string description, TimeSpan timeout, TextWriter log)
    {
        var cuda = device == Device.Cuda;
        var group = Rendezvous.Join(me, description + $"\ncollective={(cuda ? "nccl" : "tcp")}", timeout, cuda ? NcclCollective.UniqueId : null);
        ICollective c = cuda ? new NcclCollective(group, me.LocalRank) : new TcpCollective(group);
        log.WriteLine($"data parallel: {me.WorldSize} rank{(me.WorldSize == 1 ? "" : "s")} through {c.Kind} (rendezvous {me.Address}); micro-batch i of a step runs on rank i mod {me.WorldSize}");
        return new DataParallel(c);
    }

    public IReadOnlyList<int> Mine(int count) => [.. Enumerable.Range(0, count).Where(i => i % WorldSize == Rank)];

    public void Reduce(OrtValue grads, long count, bool none, double[] sums, double[,]? load)
    {
        _c.AllReduceSum(grads, count, none);
        var (layers, experts) = load is null ? (0, 0) : (load.GetLength(0), load.GetLength(1));
        var host = new double[sums.Length + (layers * experts) + 2];
        sums.CopyTo(host, 0);
        for (var l = 0; l < layers; l++) for (var e = 0; e < experts; e++) host[sums.Length + (l * experts) + e] = load![l, e];
        var stop = LocalStop();
        (host[^2], host[^1]) = (stop == 2 ? 1 : 0, stop == 15 ? 1 : 0);
        var total = _c.AllReduceSum(host);
        total.AsSpan(0, sums.Length).CopyTo(sums);
        for (var l = 0; l < layers; l++) for (var e = 0; e < experts; e++) load![l, e] = total[sums.Length + (l * experts) + e];
        AgreedStop = total[^2] > 0 ? 2 : total[^1] > 0 ? 15 : 0;
    }

    private sealed record Start(long Step, string Position);

    /// <summary>Rank 0's starting step and data position (its checkpoint's when it resumes) on every rank.</summary>
    public (long Step, DataPosition Position) ShareStart(long step, DataPosition position)
    {
        var bytes = _c.Broadcast(Writes ? JsonSerializer.SerializeToUtf8Bytes(new Start(step, position.ToJson())) : []);
        var start = JsonSerializer.Deserialize<Start>(bytes) ?? throw Fail.Bug("rank 0 sent no starting point");
        return (start.Step, DataPosition.FromJson(start.Position, "rank 0's data position"));
    }

    /// <summary>Rank 0's parameters and AdamW moments into every rank's (the ranks start alike whatever they loaded).</summary>
    public void ShareState(TrainState s)
    {
        foreach (var buffer in new[] { s.Params, s.M, s.V }) _c.Broadcast(buffer, s.Count);
    }

    /// <summary>This rank fails: the others are told why and stop.</summary>
    public void Abort(Exception e) => _c.Abort(e is UserError ? e.Message : $"{e.GetType().Name}: {e.Message}");

    public void Dispose() => _c.Dispose();
}
