using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Runtime.Collectives;

/// <summary>What a message between ranks is: a 1-byte kind and a 4-byte little-endian length, then the payload.</summary>
internal enum Frame : byte
{
    /// <summary>A rank joins: its rank, world size and run description.</summary>
    Hello = 1,
    /// <summary>Rank 0 starts the group: the payload (the NCCL unique id, or empty).</summary>
    Welcome = 2,
    /// <summary>Rank 0 refuses the group: why (UTF-8 "what\nfix").</summary>
    Refuse = 3,
    /// <summary>A buffer (gradients, host values, a broadcast).</summary>
    Data = 4,
    /// <summary>This rank's contribution is zero (it ran no micro-batch).</summary>
    Zero = 5,
    /// <summary>A rank failed: why (UTF-8 "what\nfix"); the group stops.</summary>
    Abort = 6,
}

/// <summary>One TCP connection of a group, to the process of rank <see cref="Rank"/>. I/O errors surface as .NET's own (the callers name them).</summary>
internal sealed class Peer(Socket socket, int rank) : IDisposable
{
    /// <summary>The largest payload of unknown length taken (host values, descriptions; buffers are read into their place).</summary>
    private const int MaxPayload = 64 << 20;

    private readonly NetworkStream _stream = new(socket, ownsSocket: true);

    public int Rank { get; set; } = rank;

    public Socket Socket => socket;

    /// <summary>The last Abort or Refuse payload read by <see cref="ReceiveInto"/>.</summary>
    public string LastMessage { get; private set; } = "";

    public void Send(Frame kind, ReadOnlySpan<byte> payload)
    {
        Span<byte> header = stackalloc byte[5];
        header[0] = (byte)kind;
        BinaryPrimitives.WriteInt32LittleEndian(header[1..], payload.Length);
        _stream.Write(header);
        _stream.Write(payload);
    }

    public void Send(Frame kind, string what, string fix) => Send(kind, Encoding.UTF8.GetBytes(what + "\n" + fix));

    /// <summary>The next frame, whole.</summary>
    public (Frame Kind, byte[] Payload) Receive()
    {
        var (kind, length) = Header();
        if (length > MaxPayload) throw Fail.Bug($"a {length}-byte {kind} frame from rank {Rank} (the group's protocol broke)");
        var payload = new byte[length];
        _stream.ReadExactly(payload);
        if (kind is Frame.Abort or Frame.Refuse) LastMessage = Encoding.UTF8.GetString(payload);
        return (kind, payload);
    }

    /// <summary>
    /// The next frame: a Data frame's payload goes into <paramref name="into"/> (its exact size); Zero carries nothing;
    /// an Abort or Refuse frame's text goes to <see cref="LastMessage"/>.
    /// </summary>
    public Frame ReceiveInto(Span<byte> into)
    {
        var (kind, length) = Header();
        if (kind == Frame.Data)
        {
            if (length != into.Length) throw Fail.Bug($"rank {Rank} sent {length} bytes where {into.Length} were expected (the ranks disagree on a buffer)");
            _stream.ReadExactly(into);
            return kind;
        }
        if (length > MaxPayload) throw Fail.Bug($"a {length}-byte {kind} frame from rank {Rank} (the group's protocol broke)");
        var payload = new byte[length];
        _stream.ReadExactly(payload);
        if (kind is Frame.Abort or Frame.Refuse) LastMessage = Encoding.UTF8.GetString(payload);
        return kind;
    }

    private (Frame Kind, int Length) Header()
    {
        Span<byte> header = stackalloc byte[5];
        _stream.ReadExactly(header);
        var kind = (Frame)header[0];
        if (!Enum.IsDefined(kind)) throw Fail.Bug($"unknown frame {header[0]} from rank {Rank} (a process that is not this program connected?)");
        return (kind, BinaryPrimitives.ReadInt32LittleEndian(header[1..]));
    }

    /// <summary>Blocking reads give up after this long (null: never).</summary>
    public TimeSpan? ReceiveTimeout
    {
        set => socket.ReceiveTimeout = value is { } t ? (int)Math.Clamp(t.TotalMilliseconds, 1, int.MaxValue) : 0;
    }

    /// <summary>Whether a read would not block now: a frame arrived, or the other side closed (<see cref="Peek"/>).</summary>
    public bool Readable => socket.Poll(0, SelectMode.SelectRead);

    /// <summary>After <see cref="Readable"/>: the kind of the frame that arrived, left unread, or null when the other side closed the connection.</summary>
    public Frame? Peek()
    {
        Span<byte> first = stackalloc byte[1];
        return socket.Receive(first, SocketFlags.Peek) == 0 ? null : (Frame)first[0];
    }

    /// <summary>
    /// Ends the connection without a reset: stop sending, then read and drop what still arrives for up to
    /// <paramref name="drain"/>, so an Abort frame already sent is read by the other side before the close.
    /// </summary>
    public void Close(TimeSpan drain)
    {
        try
        {
            socket.Shutdown(SocketShutdown.Send);
            if (drain > TimeSpan.Zero)
            {
                ReceiveTimeout = drain;
                var sink = new byte[64 << 10];
                var until = DateTime.UtcNow + drain;
                while (DateTime.UtcNow < until && _stream.Read(sink) > 0)
                {
                    // dropped: the group is ending
                }
            }
        }
        catch (Exception e) when (Io(e))
        {
            // the other side is already gone
        }
        Dispose();
    }

    /// <summary>An error of the connection itself (closed, reset, timed out), as opposed to a bug.</summary>
    public static bool Io(Exception e) => e is IOException or SocketException or ObjectDisposedException;

    /// <summary>A read that gave up after <see cref="ReceiveTimeout"/>.</summary>
    public static bool TimedOut(Exception e) => e is IOException { InnerException: SocketException { SocketErrorCode: SocketError.TimedOut } } or SocketException { SocketErrorCode: SocketError.TimedOut };

    public void Dispose() => _stream.Dispose();
}
