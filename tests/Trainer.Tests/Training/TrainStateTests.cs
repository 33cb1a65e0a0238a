using System.Runtime.InteropServices;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.Optim;
using MixLoRA.Runtime;
using MixLoRA.Trainer.Training;

namespace MixLoRA.Trainer.Tests.Training;

/// <summary>
/// The device state's buffers: parameters and moments updated in place by the chunked optimizer (bit-equal to
/// the out-of-place optimizer graph over the whole vector), and a second gradient buffer only once a step
/// accumulates. A captured CUDA graph relies on both: it replays the addresses it was captured with.
/// </summary>
[TestClass]
public sealed class TrainStateTests
{
    private const int Count = 10;

    private static (DeviceTensors Store, TrainState State) Make(float[] p, float[]? m = null, float[]? v = null)
    {
        var rt = OrtRuntime.Cpu;
        var store = new DeviceTensors(rt);
        var state = new TrainState(store, rt, [new TrainableTensor("a", [2, 3], Init.Zeros), new TrainableTensor("b", [4], Init.Zeros)]);
        AdapterWeights W(float[] x)
        {
            var w = new AdapterWeights();
            w.Set("a", [2, 3], x[..6]);
            w.Set("b", [4], x[6..]);
            return w;
        }
        state.Load(W(p), m is null ? null : W(m), v is null ? null : W(v));
        return (store, state);
    }

    private static float[] Random(Random rng, double scale) => Enumerable.Range(0, Count).Select(_ => (float)(scale * ((2 * rng.NextDouble()) - 1))).ToArray();

    [TestMethod]
    public void SecondGradientBufferOnlyOnceUsedAndResetGoesBackToTheFirst()
    {
        var (store, state) = Make(new float[Count]);
        using (store)
        using (state)
        {
            var bytes = store.BytesAllocated;
            Assert.AreEqual(4L * Count * sizeof(float), bytes, "params, m, v and one gradient buffer");
            var first = state.Grads.Current;
            Assert.IsFalse(state.Grads.HasSecond);
            var second = state.Grads.Next;
            Assert.AreEqual(bytes + (Count * sizeof(float)), store.BytesAllocated);
            state.Grads.Swap();
            Assert.AreSame(second, state.Grads.Current);
            state.Grads.Reset();
            Assert.AreSame(first, state.Grads.Current);
            Assert.AreSame(second, state.Grads.Next);
        }
    }

    [TestMethod]
    [DataRow(3L, false)]
    [DataRow(4L, false)]
    [DataRow(100L, false)]
    [DataRow(7L, true)]
    [DataRow(100L, true)]
    public void InPlaceChunkedUpdateEqualsTheWholeVectorGraph(long chunk, bool fused)
    {
        var rng = new Random(11);
        var (p, m, v, g) = (Random(rng, 0.5), Random(rng, 0.1), Random(rng, 0.01).Select(MathF.Abs).ToArray(), Random(rng, 2));
        var o = new OptimizerOptions(new AdamWOptions(WeightDecay: 0.01), MaxGradNorm: 0.5);  // ‖g‖ ≈ 3.6: clipped
        var (store, state) = Make(p, m, v);
        using (store)
        using (state)
        using (var opt = new ChunkedOptimizer(OrtRuntime.Cpu, store, state, o, chunk, fused))   // fused: the AdamWStep kernel, in place
        {
            store.CopyIn(MemoryMarshal.AsBytes(g.AsSpan()), state.Grads.Current);
            var scalars = new Dictionary<string, Microsoft.ML.OnnxRuntime.OrtValue>
            {
                [AdamW.StepInput] = store.Upload(HostTensor.Of([3L]) with { Shape = [] }),
                [AdamW.LrInput] = store.Upload(HostTensor.Of([0.01f]) with { Shape = [] }),
                [OptimizerGraph.GradScaleInput] = store.Upload(HostTensor.Of([1f]) with { Shape = [] }),
            };
            var norm = store.Allocate(GraphBuilder.IR.DType.Float32, []);
            opt.Run(scalars, norm);
            Assert.AreEqual((Count + chunk - 1) / chunk, opt.Chunks);

            const string F = TrainGraphs.FlatParams;
            using var whole = new GraphRunner(OrtRuntime.Cpu, OptimizerGraph.Build([new ParamSpec(F, [Count])], o with { GradScaleInput = true }));
            var r = whole.Run(new Dictionary<string, HostTensor>
            {
                [F] = HostTensor.Of(p, Count), [AdamW.GradName(F)] = HostTensor.Of(g, Count),
                [AdamW.MName(F)] = HostTensor.Of(m, Count), [AdamW.VName(F)] = HostTensor.Of(v, Count),
                [AdamW.StepInput] = HostTensor.Of([3L]) with { Shape = [] }, [AdamW.LrInput] = HostTensor.Of([0.01f]) with { Shape = [] },
                [OptimizerGraph.GradScaleInput] = HostTensor.Of([1f]) with { Shape = [] },
            });
            CollectionAssert.AreEqual(r[AdamW.NewName(F)].Floats(), store.Download(state.Params).Floats(), "parameters");
            CollectionAssert.AreEqual(r[AdamW.MNewName(F)].Floats(), store.Download(state.M).Floats(), "first moments");
            CollectionAssert.AreEqual(r[AdamW.VNewName(F)].Floats(), store.Download(state.V).Floats(), "second moments");
            Assert.AreEqual(r[OptimizerGraph.GradNormOutput].Floats()[0], store.Download(norm).Floats()[0]);
            CollectionAssert.AreNotEqual(p, store.Download(state.Params).Floats(), "the step changed the parameters");
        }
    }
}
