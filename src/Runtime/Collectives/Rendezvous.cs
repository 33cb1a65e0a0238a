using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Runtime.Collectives;

/// <summary>
/// The ranks after a rendezvous: rank 0 holds a connection to every other rank (<see cref="Peers"/>[r], r ≥ 1), every
/// other rank one to rank 0 (<see cref="Peers"/>[0]); <see cref="Payload"/> is what rank 0 handed out (the NCCL unique id).
/// </summary>
public sealed class Group : IDisposable
{
    internal Group(RankInfo me, Peer?[] peers, byte[] payload) => (Me, Peers, Payload) = (me, peers, payload);

    public RankInfo Me { get; }
    public int Rank => Me.Rank;
    public int WorldSize => Me.WorldSize;
    internal Peer?[] Peers { get; }
    public byte[] Payload { get; }

    /// <summary>The connections this rank holds (rank 0: ranks 1…N−1 in order; others: rank 0).</summary>
    internal IEnumerable<Peer> Connected => Peers.OfType<Peer>();

    public void Dispose()
    {
        foreach (var p in Connected) p.Close(TimeSpan.Zero);
    }
}

/// <summary>
/// The TCP rendezvous on MASTER_ADDR:MASTER_PORT: rank 0 listens, every other rank connects (retrying until the
/// timeout) and says who it is and what it runs (a description of the artifacts, data and options as "key=value"
/// lines). Rank 0 checks that every rank is there once, with the same world size and description, then hands out
/// the payload (the NCCL unique id); a mismatch or a timeout is refused to every rank with one message naming it.
/// </summary>
public static class Rendezvous
{
    private const int Protocol = 1;

    /// <summary>Joins the group of <paramref name="me"/>; <paramref name="payload"/> (rank 0 only) runs once every rank has joined.</summary>
    public static Group Join(RankInfo me, string description, TimeSpan timeout, Func<byte[]>? payload = null) =>
        me.Rank == 0 ? Host(me, description, timeout, payload) : Connect(me, description, timeout);

    private static Group Host(RankInfo me, string description, TimeSpan timeout, Func<byte[]>? payload)
    {
        var deadline = DateTime.UtcNow + timeout;
        using var listener = Listen(me);
        var peers = new Peer?[me.WorldSize];
        try
        {
            while (peers.Count(p => p != null) < me.WorldSize - 1)
            {
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero || !listener.Server.Poll((int)Math.Min(left.TotalMicroseconds, int.MaxValue), SelectMode.SelectRead))
                    throw Refuse(peers, TimedOut(me, peers, timeout));
                var socket = listener.AcceptSocket();
                socket.NoDelay = true;
                Admit(me, description, new Peer(socket, -1), peers, deadline);
            }
            byte[] bytes;
            try
            {
                bytes = payload?.Invoke() ?? [];
            }
            catch (UserError e)
            {
                throw Refuse(peers, ("rank 0 failed", e.Message));                     // e.g. NCCL did not load: every rank says why
            }
            foreach (var p in peers.OfType<Peer>()) p.Send(Frame.Welcome, bytes);
            return new Group(me, peers, bytes);
        }
        catch
        {
            foreach (var p in peers.OfType<Peer>()) p.Close(TimeSpan.FromSeconds(1));
            throw;
        }
    }

    private static TcpListener Listen(RankInfo me)
    {
        var loopback = me.MasterAddr is "localhost" || (IPAddress.TryParse(me.MasterAddr, out var ip) && IPAddress.IsLoopback(ip));
        var ipv6 = !loopback && Socket.OSSupportsIPv6;
        var listener = new TcpListener(loopback ? IPAddress.Loopback : ipv6 ? IPAddress.IPv6Any : IPAddress.Any, me.MasterPort);
        if (ipv6) listener.Server.DualMode = true;
        try
        {
            listener.Start(me.WorldSize);
            return listener;
        }
        catch (SocketException e)
        {
            throw Fail.Runtime($"rank 0 could not listen on {me.Address} for the rendezvous ({e.SocketErrorCode}: {e.Message})",
                e.SocketErrorCode == SocketError.AddressAlreadyInUse ? "another program uses that port: choose another MASTER_PORT" : "check MASTER_ADDR and MASTER_PORT");
        }
    }

    /// <summary>Reads a joining rank's hello and keeps it, or refuses the whole group naming the difference.</summary>
    private static void Admit(RankInfo me, string description, Peer peer, Peer?[] peers, DateTime deadline)
    {
        int rank, world;
        string theirs;
        try
        {
            peer.ReceiveTimeout = TimeSpan.FromSeconds(10);                            // a rank says hello at once; anything else is not one of ours
            var (kind, hello) = peer.Receive();
            if (kind != Frame.Hello || hello.Length < 12 || BinaryPrimitives.ReadInt32LittleEndian(hello) != Protocol)
            {
                peer.Dispose();                                                        // not one of ours (a port scan, another program): ignore it
                return;
            }
            (rank, world, theirs) = (BinaryPrimitives.ReadInt32LittleEndian(hello.AsSpan(4)), BinaryPrimitives.ReadInt32LittleEndian(hello.AsSpan(8)), Encoding.UTF8.GetString(hello.AsSpan(12)));
        }
        catch (Exception e) when (Peer.Io(e))
        {
            peer.Dispose();
            return;
        }
        peer.Rank = rank;
        if (Problem(me, rank, world, description, theirs, peers) is { } why)
        {
            Send(peer, Frame.Refuse, why);
            peer.Close(TimeSpan.FromSeconds(1));
            throw Refuse(peers, why);
        }
        peers[rank] = peer;
    }

    private static (string What, string Fix)? Problem(RankInfo me, int rank, int world, string ours, string theirs, Peer?[] peers)
    {
        if (world != me.WorldSize) return ($"rank {rank} runs with WORLD_SIZE {world}, rank 0 with {me.WorldSize}", "start every rank with the same WORLD_SIZE");
        if (rank < 1 || rank >= me.WorldSize)
            return ($"a process joined the rendezvous at {me.Address} as rank {rank}, outside 1…{me.WorldSize - 1}", "give every process its own RANK from 0 to WORLD_SIZE − 1");
        if (peers[rank] != null) return ($"two processes joined the rendezvous at {me.Address} as rank {rank}", "give every process its own RANK from 0 to WORLD_SIZE − 1");
        return Difference(rank, ours, theirs) is { } d ? (d, "start every rank with the same command, artifacts and data") : null;
    }

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    /// <summary>The first "key=value" line in which rank <paramref name="rank"/>'s description differs from rank 0's, or null.</summary>
    public static string? Difference(int rank, string ours, string theirs)
    {
        static Dictionary<string, string> Parse(string d) => d.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split('=', 2)).GroupBy(kv => kv[0]).ToDictionary(g => g.Key, g => g.First().Length > 1 ? g.First()[1] : "", StringComparer.Ordinal);
        var (a, b) = (Parse(ours), Parse(theirs));
        foreach (var key in a.Keys.Union(b.Keys))
        {
            var (mine, other) = (a.GetValueOrDefault(key, "(none)"), b.GetValueOrDefault(key, "(none)"));
            if (mine != other) return $"rank {rank} differs from rank 0 in {key}: {other} (rank 0: {mine})";
        }
        return null;
    }

    private static (string What, string Fix) TimedOut(RankInfo me, Peer?[] peers, TimeSpan timeout)
    {
        var missing = Enumerable.Range(1, me.WorldSize - 1).Where(r => peers[r] == null).ToArray();
        var names = missing.Length <= 8 ? string.Join(", ", missing) : string.Join(", ", missing.Take(8)) + $" and {missing.Length - 8} more";
        return ($"the rendezvous at {me.Address} timed out after {Seconds(timeout)} s: rank{(missing.Length == 1 ? "" : "s")} {names} of {me.WorldSize} did not join",
            "start them with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE (did one fail to start? see its output), or raise --rendezvous-timeout");
    }

    private static string Seconds(TimeSpan t) => t.TotalSeconds.ToString("0.#", CultureInfo.InvariantCulture);

    /// <summary>Tells every rank that joined why the group does not start; returns the error to throw here.</summary>
    private static UserError Refuse(Peer?[] peers, (string What, string Fix) why)
    {
        foreach (var p in peers.OfType<Peer>()) Send(p, Frame.Refuse, why);
        return Fail.Runtime(why.What, why.Fix);
    }

    private static void Send(Peer p, Frame kind, (string What, string Fix) why)
    {
        try
        {
            p.Send(kind, why.What, why.Fix);
        }
        catch (Exception e) when (Peer.Io(e))
        {
            // that rank is gone already
        }
    }

    private static Group Connect(RankInfo me, string description, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        var socket = Dial(me, timeout, deadline);
        var root = new Peer(socket, 0);
        try
        {
            var hello = new byte[12 + Encoding.UTF8.GetByteCount(description)];
            BinaryPrimitives.WriteInt32LittleEndian(hello, Protocol);
            BinaryPrimitives.WriteInt32LittleEndian(hello.AsSpan(4), me.Rank);
            BinaryPrimitives.WriteInt32LittleEndian(hello.AsSpan(8), me.WorldSize);
            Encoding.UTF8.GetBytes(description, hello.AsSpan(12));
            root.Send(Frame.Hello, hello);
            // rank 0 answers once every rank joined, or refuses at its own deadline (a little after ours when it started later)
            root.ReceiveTimeout = Max(deadline - DateTime.UtcNow, TimeSpan.Zero) + TimeSpan.FromSeconds(30);
            var (kind, payload) = root.Receive();
            if (kind == Frame.Refuse) throw Refused(root.LastMessage);
            if (kind != Frame.Welcome) throw Fail.Bug($"rank 0 answered the rendezvous with {kind}");
            root.ReceiveTimeout = null;
            var peers = new Peer?[1];
            peers[0] = root;
            return new Group(me, peers, payload);
        }
        catch (Exception e) when (Peer.Io(e))
        {
            root.Dispose();
            throw Peer.TimedOut(e)
                ? Fail.Runtime($"rank {me.Rank} joined the rendezvous at {me.Address}, but the group did not start within {Seconds(timeout)} s", "start every rank (WORLD_SIZE in all), or raise --rendezvous-timeout")
                : Fail.Runtime($"rank 0 closed the rendezvous at {me.Address} before the group started ({e.Message})", "see rank 0's output");
        }
        catch
        {
            root.Dispose();
            throw;
        }
    }

    /// <summary>A refusal's "what\nfix" as the error to throw.</summary>
    internal static UserError Refused(string message)
    {
        var cut = message.IndexOf('\n', StringComparison.Ordinal);
        return cut < 0 ? Fail.Runtime(message, "see rank 0's output") : Fail.Runtime(message[..cut], message[(cut + 1)..]);
    }

    /// <summary>Connects to rank 0, retrying every 200 ms until the deadline (rank 0 may start later).</summary>
    private static Socket Dial(RankInfo me, TimeSpan timeout, DateTime deadline)
    {
        var last = "";
        while (true)
        {
            var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                using var cts = new CancellationTokenSource(Max(TimeSpan.FromMilliseconds(100), Min(deadline - DateTime.UtcNow, TimeSpan.FromSeconds(5))));
                socket.ConnectAsync(me.MasterAddr, me.MasterPort, cts.Token).AsTask().GetAwaiter().GetResult();
                return socket;
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException)
            {
                socket.Dispose();
                last = e is SocketException s ? s.SocketErrorCode.ToString() : "no answer";
            }
            if (DateTime.UtcNow >= deadline)
            {
                throw Fail.Runtime($"rank {me.Rank} could not reach the rendezvous at {me.Address} within {Seconds(timeout)} s (last attempt: {last})",
                    "start rank 0 (RANK=0) with that MASTER_ADDR and MASTER_PORT, check that this host can reach it, or raise --rendezvous-timeout");
            }
            Thread.Sleep(200);
        }
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;
}
