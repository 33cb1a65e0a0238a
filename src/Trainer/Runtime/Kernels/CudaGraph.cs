namespace MixLoRA.Trainer.Runtime.Kernels;

/// <summary>
/// A CUDA stream that ORT computes on (the provider's user_compute_stream) and, once captured, one session
/// run recorded on it as a CUDA graph and replayed with a single launch. Replay skips ORT's host work per
/// node (~10,000 nodes a 7B step); it reuses every address and kernel argument of the captured run, so the
/// caller keeps bound tensors in place and feeds per-step values (batch, seed) through them.
/// </summary>
internal sealed unsafe class CudaGraph : IDisposable
{
    private const uint NonBlocking = 1;                    // CU_STREAM_NON_BLOCKING
    private const int Relaxed = 2;                         // CU_STREAM_CAPTURE_MODE_RELAXED: ORT's arena may cudaMalloc while capturing
    private readonly CudaRtc.Api _api;
    private nint _exec;

    public CudaGraph()
    {
        _api = CudaRtc.Libs();
        CudaRtc.CurrentContext(_api);
        nint s;
        CudaRtc.Check(_api, _api.StreamCreate(&s, NonBlocking), "cuStreamCreate");
        Stream = s;
    }

    /// <summary>The stream (cudaStream_t) to hand to ORT as its compute stream.</summary>
    public nint Stream { get; }
    public bool Captured => _exec != 0;

    /// <summary>Operations in the captured graph (kernels, copies, memsets, allocations).</summary>
    public long Nodes { get; private set; }

    /// <summary>Records what <paramref name="run"/> launches on <see cref="Stream"/> (nothing executes) and instantiates it.</summary>
    public void Capture(Action run)
    {
        CudaRtc.Check(_api, _api.StreamSynchronize(Stream), "cuStreamSynchronize");
        CudaRtc.Check(_api, _api.StreamBeginCapture(Stream, Relaxed), "cuStreamBeginCapture");
        nint graph = 0;
        try
        {
            run();
        }
        finally
        {
            var ended = _api.StreamEndCapture(Stream, &graph);
            if (graph == 0) CudaRtc.Check(_api, ended, "cuStreamEndCapture");
        }
        try
        {
            nuint count = 0;
            CudaRtc.Check(_api, _api.GraphGetNodes(graph, null, &count), "cuGraphGetNodes");
            Nodes = (long)count;
            nint exec;
            CudaRtc.Check(_api, _api.GraphInstantiate(&exec, graph, 0), "cuGraphInstantiate");
            _exec = exec;
        }
        finally
        {
            _api.GraphDestroy(graph);
        }
    }

    /// <summary>Runs the captured graph and waits for it.</summary>
    public void Replay()
    {
        // inputs were copied in through ORT on other streams (device-to-device copies do not block the
        // host): the device finishes them first
        CudaRtc.Check(_api, _api.CtxSynchronize(), "cuCtxSynchronize");
        CudaRtc.Check(_api, _api.GraphLaunch(_exec, Stream), "cuGraphLaunch");
        CudaRtc.Check(_api, _api.StreamSynchronize(Stream), "cuStreamSynchronize");
    }

    public void Dispose()
    {
        if (_exec != 0) _api.GraphExecDestroy(_exec);
        _exec = 0;
    }
}
