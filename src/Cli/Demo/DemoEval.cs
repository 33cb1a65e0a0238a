using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.Trainer.Model;
using MixLoRA.Runtime;
using MixLoRA.Text.Tokenization;

namespace MixLoRA.Cli.Demo;

/// <summary>Held-out accuracy of one demo task: how many of <see cref="Count"/> records each adapter got right.</summary>
public sealed record DemoTaskScore(string Task, string Metric, int Count, int BaseCorrect, int TrainedCorrect)
{
    public double Base => (double)BaseCorrect / Count;
    public double Trained => (double)TrainedCorrect / Count;
}

/// <summary>
/// The demo's held-out evaluation: the base model and the trained adapter on records of each task that
/// training never saw. Instruction tasks (arithmetic, copy) are scored by exact match of a greedy
/// continuation: the generated ids must be the target's ids (the answer and its newline). ARC-layout
/// records are scored as mixlora-eval scores them: the logits at the last prompt token over the answer
/// labels' tokens. The base model is the untrained adapter (`adapter_init/`, whose LoRA B matrices are
/// zero, so every expert adds nothing and the routed mix of identical FFN outputs is the base FFN): both
/// run through one composed eval graph, so the comparison differs only in the adapter's tensors. Greedy
/// decoding reruns the whole right-padded batch per new token (no KV cache; causal attention makes the
/// logits at a row's last real token independent of the padding after it); the answers are a few tokens.
/// </summary>
public static class DemoEval
{
    public static IReadOnlyList<DemoTaskScore> Run(string modelDir, string tokenizerFile, string baseAdapter, string trainedAdapter,
        IReadOnlyList<DemoTask> tasks, OrtRuntime runtime)
    {
        var tok = HfTokenizer.Load(tokenizerFile);
        var cfg = ModelConfig.Load(modelDir);
        var items = tasks.SelectMany(t => t.HeldOutTexts.Select(p => (Task: t, Prompt: tok.Encode(p.Prompt).ToArray(), Target: TargetIds(tok, p)))).ToList();
        var maxNew = items.Max(i => i.Target.Length);
        var seq = items.Max(i => i.Prompt.Length) + maxNew;
        var spec = new TrainSpec(cfg, AdapterConfig.Load(baseAdapter), new Shapes(items.Count, seq), DType.Float32, DType.Float32);
        var eval = TrainGraphs.EvalStep(spec);
        Dictionary<string, HostTensor> weights;
        using (var model = new SafetensorsModel(modelDir)) weights = WeightLoader.LoadHost(model, eval.Weights);
        using var runner = new GraphRunner(runtime, eval.Graph);
        var results = new Dictionary<string, bool[]>();
        foreach (var adapter in new[] { baseAdapter, trainedAdapter })
        {
            var feeds = new Dictionary<string, HostTensor>(weights);
            foreach (var (k, v) in Scorer.AdapterFeeds(adapter, eval.Trainable)) feeds[k] = v;
            feeds[TrainGraphs.Labels] = HostTensor.Of(Enumerable.Repeat(-100L, items.Count * seq).ToArray(), items.Count, seq);
            feeds[ForwardGraph.PositionIds] = HostTensor.Of(Trainer.Data.Batch.ColumnIndices(items.Count, seq), items.Count, seq);
            results[adapter] = Score(runner, feeds, items.Select(i => (i.Task.Kind, i.Prompt, i.Target)).ToList(), seq, maxNew, cfg.VocabSize,
                tasks.Where(t => t.Kind == DemoTaskKind.Choice).Select(t => LabelTokens(tok)).FirstOrDefault() ?? []);
        }
        return tasks.Select(t =>
        {
            var rows = Enumerable.Range(0, items.Count).Where(r => items[r].Task == t).ToList();
            return new DemoTaskScore(t.Name, t.Kind == DemoTaskKind.Choice ? "choice accuracy" : "exact match", rows.Count,
                rows.Count(r => results[baseAdapter][r]), rows.Count(r => results[trainedAdapter][r]));
        }).ToList();
    }

    /// <summary>The ids the target adds after the prompt (the prompt's ids are a prefix: digits, letters and newlines never merge across it).</summary>
    private static int[] TargetIds(HfTokenizer tok, Text.Data.TextPair p)
    {
        var prompt = tok.Encode(p.Prompt);
        var all = tok.Encode(p.Prompt + p.Target);
        if (!all.Take(prompt.Count).SequenceEqual(prompt)) throw Fail.Bug($"demo prompt '{p.Prompt}' is not a token prefix of its record");
        return all.Skip(prompt.Count).ToArray();
    }

    /// <summary>The token scored for each of the labels A–D: the last id of encode(" " + label) without special tokens, as mixlora-eval does.</summary>
    public static int[] LabelTokens(ITokenizer tok) => DemoCorpus.Labels.Select(l => tok.Encode(" " + l, addSpecialTokens: false)[^1]).ToArray();

    private static bool[] Score(GraphRunner runner, Dictionary<string, HostTensor> feeds, List<(DemoTaskKind Kind, int[] Prompt, int[] Target)> items,
        int seq, int maxNew, int vocab, int[] labelTokens)
    {
        var b = items.Count;
        var ids = new long[b * seq];
        var mask = new long[b * seq];
        var length = new int[b];
        var generated = items.Select(_ => new List<int>()).ToArray();
        var correct = new bool[b];
        for (var r = 0; r < b; r++)
        {
            for (var t = 0; t < items[r].Prompt.Length; t++) (ids[(r * seq) + t], mask[(r * seq) + t]) = (items[r].Prompt[t], 1);
            length[r] = items[r].Prompt.Length;
        }
        var open = Enumerable.Range(0, b).ToHashSet();
        for (var step = 0; step < maxNew && open.Count > 0; step++)
        {
            feeds["input_ids"] = HostTensor.Of(ids, b, seq);
            feeds["attention_mask"] = HostTensor.Of(mask, b, seq);
            var logits = runner.Run(feeds, [TrainGraphs.Logits])[TrainGraphs.Logits].Floats();
            foreach (var r in open.ToList())
            {
                var row = logits.AsSpan(((r * seq) + length[r] - 1) * vocab, vocab);
                if (items[r].Kind == DemoTaskKind.Choice)
                {
                    var best = 0;
                    for (var i = 1; i < labelTokens.Length; i++) if (row[labelTokens[i]] > row[labelTokens[best]]) best = i;
                    correct[r] = labelTokens[best] == items[r].Target[^1];
                    open.Remove(r);
                    continue;
                }
                var next = ArgMax(row);
                generated[r].Add(next);
                var target = items[r].Target;
                if (generated[r].Count == target.Length || next != target[generated[r].Count - 1])
                {
                    correct[r] = generated[r].SequenceEqual(target);
                    open.Remove(r);
                    continue;
                }
                (ids[(r * seq) + length[r]], mask[(r * seq) + length[r]]) = (next, 1);
                length[r]++;
            }
        }
        return correct;
    }

    private static int ArgMax(ReadOnlySpan<float> row)
    {
        var best = 0;
        for (var i = 1; i < row.Length; i++) if (row[i] > row[best]) best = i;
        return best;
    }
}
