using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Runtime.Collectives;

/// <summary>
/// The collective for CUDA buffers through NCCL: one communicator over the group (rank 0 made the unique id, the
/// rendezvous handed it out), ncclAllReduce (ncclFloat32, ncclSum) and ncclBroadcast in place on the flat buffer.
/// Host values and failure messages travel over the rendezvous sockets (<see cref="TcpCollective"/>).
/// <para>ONNX Runtime computes on its own streams: before a collective this waits for the device
/// (cudaDeviceSynchronize), then runs NCCL on its own stream and waits for that, polling NCCL's asynchronous error
/// and the other ranks' sockets, so a rank that dies or a NCCL error ends the wait (ncclCommAbort) instead of
/// hanging. NCCL's environment (NCCL_*) is passed through as set.</para>
/// </summary>
public sealed unsafe class NcclCollective : ICollective
{
    private readonly NcclApi _api = null!;                                             // set first in the constructor; null only when it failed
    private readonly TcpCollective _host;
    private readonly int _device;
    private nint _comm, _stream;
    private bool _failed;

    /// <summary>Joins the NCCL communicator of <paramref name="group"/> on GPU <paramref name="device"/> (blocks until every rank has).</summary>
    public NcclCollective(Group group, int device)
    {
        (_host, _device) = (new TcpCollective(group), device);
        try
        {
            _api = NcclApi.Get();
            if (group.Payload.Length != NcclUniqueId.Size) throw Fail.Bug($"the rendezvous handed out {group.Payload.Length} bytes for a NCCL unique id");
            int count;
            _api.Cuda(_api.GetDeviceCount(&count), "cudaGetDeviceCount");
            Fail.If(device >= count, $"rank {group.Rank} has LOCAL_RANK {device}, but this host has {count} GPU{(count == 1 ? "" : "s")}",
                "start at most one rank per GPU on each host (--nproc N with N ≤ the GPUs, or torchrun --nproc-per-node)");
            _api.Cuda(_api.SetDevice(device), $"cudaSetDevice({device})");
            nint stream, comm;
            _api.Cuda(_api.StreamCreateWithFlags(&stream, 1), "cudaStreamCreateWithFlags");    // cudaStreamNonBlocking
            _stream = stream;
            _host.Barrier();                                                               // every rank's GPU is ready: ncclCommInitRank blocks until all call it
            var id = default(NcclUniqueId);
            group.Payload.CopyTo(new Span<byte>(id.Internal, NcclUniqueId.Size));
            _api.Nccl(_api.CommInitRank(&comm, group.WorldSize, id, group.Rank), $"ncclCommInitRank (rank {group.Rank} of {group.WorldSize}, cuda:{device})");
            _comm = comm;
        }
        catch (Exception e)
        {
            _host.Abort(e.Message);
            Release(abort: true);
            _host.Dispose();
            throw;
        }
    }

    /// <summary>A new NCCL unique id (rank 0, before the group starts: the rendezvous hands it out).</summary>
    public static byte[] UniqueId()
    {
        var api = NcclApi.Get();
        var id = default(NcclUniqueId);
        api.Nccl(api.GetUniqueId(&id), "ncclGetUniqueId");
        return new ReadOnlySpan<byte>(id.Internal, NcclUniqueId.Size).ToArray();
    }

    /// <summary>The loaded NCCL's version.</summary>
    public static string Version => NcclApi.Get().Version();

    public int Rank => _host.Rank;
    public int WorldSize => _host.WorldSize;
    public string Kind => "nccl";

    public void AllReduceSum(OrtValue buffer, long count, bool zero = false)
    {
        var p = Address(buffer);
        Run("ncclAllReduce", () =>
        {
            if (zero) _api.Cuda(_api.MemsetAsync(p, 0, (nuint)(count * 4), _stream), "cudaMemsetAsync");
            return _api.AllReduce(p, p, (nuint)count, NcclApi.Float32, NcclApi.Sum, _comm, _stream);
        });
    }

    public void Broadcast(OrtValue buffer, long count)
    {
        var p = Address(buffer);
        Run("ncclBroadcast", () => _api.Broadcast(p, p, (nuint)count, NcclApi.Float32, 0, _comm, _stream));
    }

    public double[] AllReduceSum(double[] values) => _host.AllReduceSum(values);
    public byte[] Broadcast(byte[] value) => _host.Broadcast(value);
    public void Barrier() => _host.Barrier();

    public void Abort(string message)
    {
        _host.Abort(message);
        Release(abort: true);
    }

    /// <summary>Waits for ORT's work on the device, queues <paramref name="enqueue"/> on the stream, and waits for it.</summary>
    private void Run(string what, Func<int> enqueue)
    {
        Fail.If(_failed, "the NCCL communicator was aborted after an earlier failure", "see the first error");
        try
        {
            _api.Cuda(_api.SetDevice(_device), $"cudaSetDevice({_device})");
            _api.Cuda(_api.DeviceSynchronize(), "cudaDeviceSynchronize before " + what);
            _api.Nccl(enqueue(), what);
            Wait(what);
        }
        catch (UserError e)
        {
            _host.Abort(e.Message);                                                    // a no-op when the failure came from another rank
            Release(abort: true);
            throw;
        }
    }

    /// <summary>Polls the stream; NCCL's asynchronous error and the other ranks (a closed socket, an Abort) end the wait.</summary>
    private void Wait(string what)
    {
        var clock = Stopwatch.StartNew();
        var spins = 0;
        while (true)
        {
            var q = _api.StreamQuery(_stream);
            if (q == 0) return;
            if (q != NcclApi.CudaNotReady) _api.Cuda(q, what);
            int async;
            _api.Nccl(_api.CommGetAsyncError(_comm, &async), "ncclCommGetAsyncError");
            if (async is not (NcclApi.Success or NcclApi.InProgress))
                throw Fail.Runtime($"{what} failed on rank {Rank}: NCCL error {async} ({_api.NcclText(async)})", "see the other ranks' output; NCCL_DEBUG=INFO tells more");
            if (++spins < 2000)
            {
                Thread.SpinWait(64);
                continue;
            }
            if (clock.ElapsedMilliseconds > 20)
            {
                _host.CheckPeers();
                clock.Restart();
            }
            Thread.Sleep(1);
        }
    }

    private static nint Address(OrtValue v) => (nint)System.Runtime.CompilerServices.Unsafe.AsPointer(ref MemoryMarshal.GetReference(v.GetTensorMutableRawData()));

    private void Release(bool abort)
    {
        if (_comm != 0 && _api != null)
        {
            if (abort) _api.CommAbort(_comm);
            else _api.CommDestroy(_comm);
            _comm = 0;
        }
        if (_stream != 0 && _api != null)
        {
            _api.StreamDestroy(_stream);
            _stream = 0;
        }
        _failed |= abort;
    }

    public void Dispose()
    {
        Release(abort: false);
        _host.Dispose();
    }
}
