using System.Collections.Immutable;
using Microsoft.ML.OnnxRuntime;
using MixLoRA.Cli.Bench;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.Runtime;

namespace MixLoRA.Trainer.Tests.Training;

/// <summary>
/// Runs a grad-step graph once on the CPU for tests that compare two builds of it (checkpointed vs stored,
/// fused vs composed): random feeds of a 2 × 16 batch, seeded random nodes, ORT optimizations on or off.
/// </summary>
internal static class GradStepHarness
{
    /// <summary>The graph with a seed on every Dropout and noise node (base + its index among them).</summary>
    public static Graph Seeded(Graph g, long seed)
    {
        var k = 0L;
        return g with
        {
            Nodes = g.Nodes.Select(n => n.OpType is "Dropout" or "RandomUniformLike" ? n with { Attrs = n.Attrs.SetItem("seed", n.OpType == "Dropout" ? (object)(seed + k++) : (float)(seed + k++)) } : n).ToImmutableArray(),
        };
    }

    /// <summary>
    /// Random frozen weights, trainables in ±0.05, a 2 × 16 batch of random ids (the first
    /// <paramref name="realTokens"/> positions real, labels = ids) and the fused dropout's seed.
    /// </summary>
    public static Dictionary<string, HostTensor> Feeds(CompiledGraph g, int seed, int realTokens)
    {
        var rng = new Random(seed);
        var weights = new RandomWeights(3);
        var feeds = g.Weights.ToDictionary(w => w.Key, w => weights.Load(w.Key, w.Value.DType, w.Value.S.ToLongs()));
        foreach (var t in g.Trainable) feeds[t.Key] = HostTensor.Of(Enumerable.Range(0, (int)t.Count).Select(_ => (float)(0.05 * ((2 * rng.NextDouble()) - 1))).ToArray(), t.Shape);
        var ids = Enumerable.Range(0, 32).Select(_ => (long)rng.Next(256)).ToArray();
        feeds["input_ids"] = HostTensor.Of(ids, 2, 16);
        feeds["attention_mask"] = HostTensor.Of(Enumerable.Range(0, 32).Select(i => i < realTokens ? 1L : 0L).ToArray(), 2, 16);
        feeds["labels"] = HostTensor.Of(ids, 2, 16);
        StepInputs(feeds, 2, 16);
        feeds[SwiGluSlotsOps.SeedInput] = HostTensor.Of([5L]);
        return feeds;
    }

    /// <summary>The training graphs' per-step inputs for unpacked rows: position ids 0..T−1, and a one-micro-batch step's token shares (1).</summary>
    public static void StepInputs(Dictionary<string, HostTensor> feeds, int b, int t)
    {
        feeds[ForwardGraph.PositionIds] = HostTensor.Of(Trainer.Data.Batch.ColumnIndices(b, t), b, t);
        feeds[TrainGraphs.LmWeight] = HostTensor.Of([1f]) with { Shape = [] };
        feeds[TrainGraphs.AuxWeight] = HostTensor.Of([1f]) with { Shape = [] };
    }

    public static Dictionary<string, HostTensor> Run(Graph g, Dictionary<string, HostTensor> feeds, bool optimize)
    {
        using var options = OrtRuntime.Cpu.Options();
        if (!optimize) options.GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL;
        using var run = new GraphRunner(OrtRuntime.Cpu, OnnxWriter.ToBytes(g), options);
        return run.Run(feeds);
    }
}
