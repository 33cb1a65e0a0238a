using Microsoft.ML.OnnxRuntime;

namespace MixLoRA.Runtime.Collectives;

/// <summary>
/// The operations data parallelism needs between the ranks of a <see cref="Group"/>. Every rank calls each one in
/// the same order. Results are bit-identical on every rank. A failure anywhere (a rank that exits, is killed or
/// calls <see cref="Abort"/>, a NCCL or socket error) makes the pending and every later call on every rank fail
/// with one message naming the rank and what happened.
/// </summary>
public interface ICollective : IDisposable
{
    int Rank { get; }
    int WorldSize { get; }

    /// <summary>What moves the device buffers: "nccl" or "tcp".</summary>
    string Kind { get; }

    /// <summary>
    /// Sums the first <paramref name="count"/> fp32 elements of <paramref name="buffer"/> (memory of the runtime's
    /// device) over all ranks, in place. With <paramref name="zero"/> this rank contributes zeros (what the buffer
    /// held is ignored).
    /// </summary>
    void AllReduceSum(OrtValue buffer, long count, bool zero = false);

    /// <summary>Sums small host vectors (the same length on every rank) in rank order.</summary>
    double[] AllReduceSum(double[] values);

    /// <summary>Rank 0's <paramref name="count"/> fp32 elements of <paramref name="buffer"/> into every rank's.</summary>
    void Broadcast(OrtValue buffer, long count);

    /// <summary>Rank 0's bytes on every rank (others pass anything, e.g. empty).</summary>
    byte[] Broadcast(byte[] value);

    /// <summary>Returns when every rank has called it.</summary>
    void Barrier();

    /// <summary>This rank is failing with <paramref name="message"/>: the other ranks are told (best effort) and stop with it.</summary>
    void Abort(string message);
}
