using System.Net;
using System.Net.Sockets;
using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder;
using MixLoRA.Runtime.Collectives;

namespace MixLoRA.Trainer.Tests.Distributed;

/// <summary>
/// The rendezvous and the TCP collective with 3 ranks on threads of this process over loopback: sums in rank order
/// with the same bits on every rank, zero contributions, host values, broadcasts; a rank's failure or disappearance
/// reaches every other rank as one message; rendezvous timeouts and mismatches name the address, ranks and key.
/// </summary>
[TestClass]
public sealed class TcpCollectiveTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    internal static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        var port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    /// <summary>Runs <paramref name="body"/> as each of <paramref name="n"/> ranks on its own thread; each rank's result or exception.</summary>
    internal static (T? Value, Exception? Error)[] Ranks<T>(int n, Func<RankInfo, T> body)
    {
        var port = FreePort();
        var results = new (T?, Exception?)[n];
        var threads = Enumerable.Range(0, n).Select(r => new Thread(() =>
        {
            try
            {
                results[r] = (body(new RankInfo(r, n, r, "127.0.0.1", port)), null);
            }
            catch (Exception e)
            {
                results[r] = (default, e);
            }
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) Assert.IsTrue(t.Join(TimeSpan.FromSeconds(60)), "a rank hung");
        return results;
    }

    private static float[] Data(int rank, int count)
    {
        var rng = new Random(100 + rank);
        // magnitudes from 1e-4 to 1e4: the order of the additions shows in the bits
        return [.. Enumerable.Range(0, count).Select(_ => (float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-4, 5))))];
    }

    [TestMethod]
    public void ThreeRanksSumInRankOrderAndGetTheSameBits()
    {
        const int Count = 10_007;
        var inputs = Enumerable.Range(0, 3).Select(r => Data(r, Count)).ToArray();
        var results = Ranks(3, me =>
        {
            using var c = new TcpCollective(Rendezvous.Join(me, "run=1", Timeout));
            var data = (float[])inputs[me.Rank].Clone();
            using var buffer = OrtValue.CreateTensorValueFromMemory(data, [Count]);
            c.AllReduceSum(buffer, Count);
            var sum = (float[])data.Clone();
            var idle = (float[])inputs[me.Rank].Clone();
            using var idleBuffer = OrtValue.CreateTensorValueFromMemory(idle, [Count]);
            c.AllReduceSum(idleBuffer, Count, zero: me.Rank == 1);                          // rank 1 ran no micro-batch
            var host = c.AllReduceSum([me.Rank, me.Rank * 10.0]);
            var bytes = c.Broadcast(me.Rank == 0 ? [7, 8, 9] : []);
            var fromRoot = new float[Count];
            if (me.Rank == 0) inputs[2].CopyTo(fromRoot, 0);
            using var rootBuffer = OrtValue.CreateTensorValueFromMemory(fromRoot, [Count]);
            c.Broadcast(rootBuffer, Count);
            c.Barrier();
            return (sum, idle, host, bytes, fromRoot);
        });
        foreach (var (_, e) in results) Assert.IsNull(e, e?.ToString());
        var want = new float[Count];
        var wantIdle = new float[Count];
        for (var i = 0; i < Count; i++)
        {
            want[i] = (inputs[0][i] + inputs[1][i]) + inputs[2][i];
            wantIdle[i] = inputs[0][i] + inputs[2][i];
        }
        Assert.AreNotEqual(0, Enumerable.Range(0, Count).Count(i => want[i] != (inputs[0][i] + (inputs[1][i] + inputs[2][i]))), "the data shows the summation order");
        foreach (var (v, _) in results)
        {
            CollectionAssert.AreEqual(want, v.sum, "((b0 + b1) + b2), the same bits on every rank");
            CollectionAssert.AreEqual(wantIdle, v.idle, "a zero contribution adds nothing");
            CollectionAssert.AreEqual(new[] { 3.0, 30.0 }, v.host);
            CollectionAssert.AreEqual(new byte[] { 7, 8, 9 }, v.bytes);
            CollectionAssert.AreEqual(inputs[2], v.fromRoot);
        }
    }

    [TestMethod]
    public void ARankThatFailsStopsEveryRankWithItsMessage()
    {
        var results = Ranks(3, me =>
        {
            using var c = new TcpCollective(Rendezvous.Join(me, "run=1", Timeout));
            var data = new float[100];
            using var buffer = OrtValue.CreateTensorValueFromMemory(data, [100]);
            c.AllReduceSum(buffer, 100);                                                    // one step together
            if (me.Rank == 2)
            {
                c.Abort("could not write /x: no space left on device: free space or choose another --out");
                return 0;
            }
            c.AllReduceSum(buffer, 100);
            return 1;
        });
        Assert.IsNull(results[2].Error);
        foreach (var r in new[] { 0, 1 })
        {
            Assert.IsInstanceOfType<UserError>(results[r].Error, $"rank {r}: {results[r].Error}");
            Assert.AreEqual("rank 2 failed: could not write /x: no space left on device: free space or choose another --out", results[r].Error!.Message, $"rank {r}");
        }
    }

    [TestMethod]
    [DataRow(1)]
    [DataRow(0)]
    public void ARankThatDisappearsStopsTheOthers(int gone)
    {
        var results = Ranks(3, me =>
        {
            var c = new TcpCollective(Rendezvous.Join(me, "run=1", Timeout));
            using var buffer = OrtValue.CreateTensorValueFromMemory(new float[100], [100]);
            c.AllReduceSum(buffer, 100);
            if (me.Rank == gone)
            {
                c.Dispose();                                                                // its sockets close, as when the process dies
                return 0;
            }
            using (c) c.AllReduceSum(buffer, 100);
            return 1;
        });
        foreach (var r in Enumerable.Range(0, 3).Where(r => r != gone))
        {
            Assert.IsInstanceOfType<UserError>(results[r].Error, $"rank {r}: {results[r].Error}");
            StringAssert.StartsWith(results[r].Error!.Message, $"rank {gone} stopped: its connection closed", $"rank {r}");
        }
    }

    /// <summary>
    /// What the NCCL wait polls between stream queries: a rank that finished first and already sent its next part is
    /// left to be read in turn; an Abort or a closed connection ends the wait with the rank's message.
    /// </summary>
    [TestMethod]
    public void PollingThePeersLeavesTheNextPartAndSeesFailures()
    {
        using var checkedAbort = new ManualResetEventSlim();
        var results = Ranks(3, me =>
        {
            using var c = new TcpCollective(Rendezvous.Join(me, "run=1", Timeout));
            if (me.Rank != 0)
            {
                var sum = c.AllReduceSum([me.Rank]);                                       // sent at once; rank 0 polls before it reads
                if (me.Rank == 1) c.Abort("out of memory: use a smaller --micro-batch-size");
                else checkedAbort.Wait(TimeSpan.FromSeconds(30));                         // rank 2 leaves after rank 0 saw rank 1's message
                return sum[0];
            }
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (clock.ElapsedMilliseconds < 300) c.CheckPeers();                         // both parts are pending: nothing is consumed
            var total = c.AllReduceSum([0.0])[0];
            var error = Assert.ThrowsExactly<UserError>(() =>
            {
                while (true) c.CheckPeers();
            });
            checkedAbort.Set();
            Assert.AreEqual("rank 1 failed: out of memory: use a smaller --micro-batch-size", error.Message);
            return total;
        });
        foreach (var (v, e) in results)
        {
            Assert.IsNull(e, e?.ToString());
            Assert.AreEqual(3.0, v);
        }
    }

    [TestMethod]
    public void RendezvousHandsOutRankZerosPayload()
    {
        var results = Ranks(3, me =>
        {
            using var g = Rendezvous.Join(me, "run=1", Timeout, () => [.. Enumerable.Range(0, 128).Select(i => (byte)i)]);
            return g.Payload;
        });
        foreach (var (v, e) in results)
        {
            Assert.IsNull(e, e?.ToString());
            CollectionAssert.AreEqual(Enumerable.Range(0, 128).Select(i => (byte)i).ToArray(), v);
        }
    }

    [TestMethod]
    public void RendezvousTimeoutNamesTheAddressAndTheMissingRank()
    {
        string? address = null;
        var results = Ranks(2, me =>
        {
            address = me.Address;
            using var g = Rendezvous.Join(me with { WorldSize = 3 }, "run=1", TimeSpan.FromSeconds(1.5));
            return 0;
        });
        foreach (var (_, e) in results)
        {
            Assert.IsInstanceOfType<UserError>(e);
            StringAssert.StartsWith(e!.Message, $"the rendezvous at {address} timed out after 1.5 s: rank 2 of 3 did not join");
        }
        var alone = Ranks(1, me => Rendezvous.Join(me with { Rank = 1, WorldSize = 2 }, "run=1", TimeSpan.FromSeconds(1)));
        Assert.IsInstanceOfType<UserError>(alone[0].Error);
        StringAssert.Contains(alone[0].Error!.Message, "rank 1 could not reach the rendezvous at 127.0.0.1:");
        StringAssert.Contains(alone[0].Error!.Message, "within 1 s");
    }

    [TestMethod]
    public void RanksThatRunSomethingElseAreRefusedNamingTheDifference()
    {
        var results = Ranks(2, me =>
        {
            using var g = Rendezvous.Join(me, $"steps=10\nseed={(me.Rank == 0 ? 42 : 7)}", Timeout);
            return 0;
        });
        foreach (var (_, e) in results)
        {
            Assert.IsInstanceOfType<UserError>(e);
            Assert.AreEqual("rank 1 differs from rank 0 in seed: 7 (rank 0: 42): start every rank with the same command, artifacts and data", e!.Message);
        }
    }
}
