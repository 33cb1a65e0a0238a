using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using MixLoRA.Runtime;
using MixLoRA.Runtime.Collectives;

namespace MixLoRA.Cli.Diagnostics;

/// <summary>
/// `mixlora-doctor --collective` (alias --nccl): the data-parallel collective of the device in a group of one rank,
/// through the real rendezvous on loopback: NCCL on CUDA (the library loads, the communicator starts on cuda:0, an
/// all-reduce and a broadcast of a device buffer keep its bits, a zero contribution gives zeros), TCP on the CPU.
/// </summary>
public static class CollectiveCheck
{
    public static bool Run(OrtRuntime rt, TextWriter log)
    {
        var cuda = rt.Device == Device.Cuda;
        if (cuda) log.WriteLine($"collective: NCCL {NcclCollective.Version} (NCCL_* variables passed through as set)");
        var me = new RankInfo(0, 1, rt.Settings.CudaDevice, "127.0.0.1", FreePort());
        var group = Rendezvous.Join(me, "doctor", TimeSpan.FromSeconds(30), cuda ? NcclCollective.UniqueId : null);
        using ICollective c = cuda ? new NcclCollective(group, me.LocalRank) : new TcpCollective(group);
        using var store = new DeviceTensors(rt);
        const int N = 1 << 22;
        var want = Enumerable.Range(0, N).Select(i => (i % 1000) * 0.25f - 7f).ToArray();
        var buffer = store.Upload(HostTensor.Of(want, N));
        var clock = Stopwatch.StartNew();
        c.AllReduceSum(buffer, N);
        var ms = clock.Elapsed.TotalMilliseconds;
        var ok = Same(store.Download(buffer).Floats(), want, log, "all-reduce of one rank");
        c.Broadcast(buffer, N);
        ok &= Same(store.Download(buffer).Floats(), want, log, "broadcast from rank 0");
        c.AllReduceSum(buffer, N, zero: true);
        ok &= Same(store.Download(buffer).Floats(), new float[N], log, "all-reduce of a zero contribution");
        ok &= c.AllReduceSum([1.5, -2])[0] == 1.5;
        c.Barrier();
        log.WriteLine($"collective: {c.Kind} on {rt.Device.ToString().ToLowerInvariant()}{(cuda ? $":{me.LocalRank}" : "")}, 1 rank: all-reduce of {N:N0} floats {ms:F1} ms, broadcast, zero contribution, host values: {(ok ? "ok" : "FAILED")}");
        return ok;
    }

    private static bool Same(float[] got, float[] want, TextWriter log, string what)
    {
        var bad = FirstDifference(got, want);
        if (bad < 0) return true;
        log.WriteLine($"collective: {what} changed element {bad}: {got[bad]:R} instead of {want[bad]:R}");
        return false;
    }

    private static int FirstDifference(float[] a, float[] b)
    {
        for (var i = 0; i < b.Length; i++) if (BitConverter.SingleToInt32Bits(a[i]) != BitConverter.SingleToInt32Bits(b[i])) return i;
        return -1;
    }

    private static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        var port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }
}
