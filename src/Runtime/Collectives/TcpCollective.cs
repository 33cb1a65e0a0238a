using System.Runtime.InteropServices;
using System.Text;
using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Runtime.Collectives;

/// <summary>
/// The collective over the rendezvous sockets, for buffers in host memory (the CPU device): every rank sends its
/// buffer to rank 0, which adds them in rank order, ((b0 + b1) + b2) + …, and sends the sum back, so every rank
/// gets the same bits. Rank 0 moves (N − 1) buffers each way: meant for the CPU, for tests and for hosts without
/// NCCL, not for speed. It also carries the host values and failure messages of <see cref="NcclCollective"/>.
/// <para>Failures: a rank that fails calls <see cref="Abort"/>, which sends its message; rank 0 passes a failure
/// it sees (that message, or a connection that closed: a rank that exited or was killed) to every other rank.</para>
/// </summary>
public sealed class TcpCollective : ICollective
{
    private readonly Group _group;
    private byte[] _scratch = [];
    private (string What, string Fix)? _failed;

    public TcpCollective(Group group) => _group = group;

    public int Rank => _group.Rank;
    public int WorldSize => _group.WorldSize;
    public string Kind => "tcp";

    public void AllReduceSum(OrtValue buffer, long count, bool zero = false)
    {
        var bytes = Host(buffer, count);
        if (zero) bytes.Clear();
        if (Rank != 0)
        {
            SendTo(_group.Peers[0]!, zero ? Frame.Zero : Frame.Data, zero ? [] : bytes);
            Receive(_group.Peers[0]!, bytes);
            return;
        }
        if (_scratch.Length < bytes.Length) _scratch = new byte[bytes.Length];
        var sum = MemoryMarshal.Cast<byte, float>(bytes);
        var part = MemoryMarshal.Cast<byte, float>(_scratch.AsSpan(0, bytes.Length));
        foreach (var p in _group.Connected)
        {
            if (Receive(p, _scratch.AsSpan(0, bytes.Length)) == Frame.Data) System.Numerics.Tensors.TensorPrimitives.Add(sum, part, sum);
        }
        SendAll(bytes);
    }

    public double[] AllReduceSum(double[] values)
    {
        var bytes = MemoryMarshal.AsBytes(values.AsSpan());
        if (Rank != 0)
        {
            SendTo(_group.Peers[0]!, Frame.Data, bytes);
            Receive(_group.Peers[0]!, bytes);
            return values;
        }
        var part = new double[values.Length];
        foreach (var p in _group.Connected)
        {
            Receive(p, MemoryMarshal.AsBytes(part.AsSpan()));
            for (var i = 0; i < values.Length; i++) values[i] += part[i];
        }
        SendAll(bytes);
        return values;
    }

    public void Broadcast(OrtValue buffer, long count)
    {
        var bytes = Host(buffer, count);
        if (Rank == 0) SendAll(bytes);
        else Receive(_group.Peers[0]!, bytes);
    }

    public byte[] Broadcast(byte[] value)
    {
        if (Rank == 0)
        {
            SendAll(value);
            return value;
        }
        var root = _group.Peers[0]!;
        var (kind, payload) = Guard(root, root.Receive);
        if (kind == Frame.Abort) throw Failed(root.LastMessage);
        return kind == Frame.Data ? payload : throw Fail.Bug($"rank 0 sent {kind} for a broadcast");
    }

    public void Barrier() => AllReduceSum([]);

    public void Abort(string message)
    {
        if (_failed != null) return;                                                   // the failure came from the group: it knows
        _failed = ($"rank {Rank} failed", message);
        foreach (var p in _group.Connected) Tell(p, _failed.Value);
        foreach (var p in _group.Connected) p.Close(TimeSpan.FromSeconds(2));
    }

    /// <summary>
    /// Fails when the group failed while this rank waited on something else (a NCCL kernel): a rank's Abort message
    /// or a closed connection. Never blocks.
    /// </summary>
    public void CheckPeers()
    {
        if (_failed is { } f) throw Fail.Runtime(f.What, f.Fix);
        foreach (var p in _group.Connected)
        {
            if (!Guard(p, () => p.Readable)) continue;
            switch (Guard(p, p.Peek))
            {
                case null:
                    throw Stopped(p, "its connection closed");
                case Frame.Abort:
                    Guard(p, p.Receive);
                    throw Failed(p.LastMessage);
                default:
                    continue;                                                              // a rank that finished first sent its next part: read in its turn
            }
        }
    }

    private Frame Receive(Peer p, Span<byte> into)
    {
        if (_failed is { } f) throw Fail.Runtime(f.What, f.Fix);
        Frame kind;
        try
        {
            kind = p.ReceiveInto(into);
        }
        catch (Exception e) when (Peer.Io(e))
        {
            throw Stopped(p, $"its connection closed ({e.Message.TrimEnd('.')})");
        }
        return kind == Frame.Abort ? throw Failed(p.LastMessage) : kind;
    }

    private void SendAll(ReadOnlySpan<byte> bytes)
    {
        foreach (var p in _group.Connected) SendTo(p, Frame.Data, bytes);
    }

    private void SendTo(Peer p, Frame kind, ReadOnlySpan<byte> bytes)
    {
        if (_failed is { } f) throw Fail.Runtime(f.What, f.Fix);
        try
        {
            p.Send(kind, bytes);
        }
        catch (Exception e) when (Peer.Io(e))
        {
            throw Stopped(p, $"its connection closed ({e.Message.TrimEnd('.')})");
        }
    }

    private T Guard<T>(Peer p, Func<T> io)
    {
        if (_failed is { } f) throw Fail.Runtime(f.What, f.Fix);
        try
        {
            return io();
        }
        catch (Exception e) when (Peer.Io(e))
        {
            // rank 0 may have said why before it closed: that message, if it reached us, is the one to report
            throw Stopped(p, $"its connection closed ({e.Message.TrimEnd('.')})");
        }
    }

    /// <summary>A connection that ended: on a non-zero rank, rank 0's Abort may still be readable and says why.</summary>
    private UserError Stopped(Peer p, string how)
    {
        if (Rank != 0 && Pending(p) is { } said) return Failed(said);
        return Record(($"rank {p.Rank} stopped: {how}", "it exited, failed or was killed: see its output; rank 0 keeps the last complete checkpoint"));
    }

    /// <summary>An Abort frame that already arrived on a closing connection, or null.</summary>
    private static string? Pending(Peer p)
    {
        try
        {
            p.ReceiveTimeout = TimeSpan.FromMilliseconds(500);
            var (kind, _) = p.Receive();
            return kind == Frame.Abort ? p.LastMessage : null;
        }
        catch (Exception e) when (Peer.Io(e))
        {
            return null;
        }
    }

    /// <summary>A failure message ("what\nfix") that came from another rank.</summary>
    private UserError Failed(string message)
    {
        var cut = message.IndexOf('\n', StringComparison.Ordinal);
        return Record(cut < 0 ? (message, "see that rank's output") : (message[..cut], message[(cut + 1)..]));
    }

    /// <summary>Keeps the group's failure (later calls fail with it) and, on rank 0, passes it to every other rank.</summary>
    private UserError Record((string What, string Fix) why)
    {
        _failed ??= why;
        if (Rank == 0) foreach (var p in _group.Connected) Tell(p, _failed.Value);
        foreach (var p in _group.Connected) p.Close(TimeSpan.FromSeconds(2));
        return Fail.Runtime(_failed.Value.What, _failed.Value.Fix);
    }

    private static void Tell(Peer p, (string What, string Fix) why)
    {
        try
        {
            p.Send(Frame.Abort, Encoding.UTF8.GetBytes(why.What + "\n" + why.Fix));
        }
        catch (Exception e) when (Peer.Io(e))
        {
            // that rank is gone already
        }
    }

    /// <summary>The first <paramref name="count"/> floats of a host-memory tensor as bytes.</summary>
    private static Span<byte> Host(OrtValue buffer, long count)
    {
        var bytes = buffer.GetTensorMutableRawData();
        if (bytes.Length < count * 4) throw Fail.Bug($"a collective over {count} floats of a {bytes.Length}-byte tensor");
        return bytes[..(int)(count * 4)];
    }

    public void Dispose() => _group.Dispose();
}
