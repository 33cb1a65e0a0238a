using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.Runtime;
using MixLoRA.Text.Data;
using MixLoRA.Trainer.Data;

namespace MixLoRA.Trainer.Model;

/// <summary>Logits of one right-padded batch and the mean causal-LM loss over its labelled tokens.</summary>
/// <param name="Logits">(B, T, V) float32, row-major.</param>
/// <param name="Loss">Mean cross-entropy over shifted labels ≠ −100 (NaN when none).</param>
/// <param name="LabelledTokens">How many (position, next label) pairs the loss averages.</param>
public sealed record ScoreResult(Batch Batch, float[] Logits, int Vocab, double Loss, long LabelledTokens)
{
    public double Perplexity => Math.Exp(Loss);
}

/// <summary>
/// Runs pre-tokenized examples through a HF checkpoint (optionally with an adapter) as one right-padded
/// batch: the base forward graph, or the eval step with the adapter's tensors fed as inputs.
/// </summary>
public static class Scorer
{
    public static ScoreResult Score(string modelDir, string? adapterDir, IReadOnlyList<Example> examples, OrtRuntime runtime, DType dtype)
    {
        if (!Directory.Exists(modelDir)) throw Fail.User($"model folder not found: {modelDir}", "pass --model DIR holding config.json and *.safetensors");
        var cfg = ModelConfig.Load(modelDir);
        var pad = PadId(cfg, modelDir);
        CheckIds(examples, cfg.VocabSize);
        var batch = new BatchStream(examples, new BatchOptions(examples.Count, examples.Count, pad), DataPosition.Start(0))
            .Pad([.. Enumerable.Range(0, examples.Count)]);
        var shapes = new Shapes(batch.B, batch.T);
        using var model = new SafetensorsModel(modelDir);
        Graph graph;
        Dictionary<string, HostTensor> feeds;
        if (adapterDir is null)
        {
            var fwd = ForwardGraph.Logits(cfg, shapes, dtype, dtype);
            graph = fwd.Graph!;
            feeds = WeightLoader.LoadHost(model, fwd.Weights.Declared);
        }
        else
        {
            var eval = TrainGraphs.EvalStep(new TrainSpec(cfg, AdapterConfig.Load(adapterDir), shapes, dtype, dtype));
            graph = eval.Graph;
            feeds = WeightLoader.LoadHost(model, eval.Weights);
            foreach (var (k, t) in AdapterFeeds(adapterDir, eval.Trainable)) feeds[k] = t;
            feeds[TrainGraphs.Labels] = HostTensor.Of(batch.Labels, batch.B, batch.T);
        }
        feeds["input_ids"] = HostTensor.Of(batch.InputIds, batch.B, batch.T);
        feeds["attention_mask"] = HostTensor.Of(batch.AttentionMask, batch.B, batch.T);
        if (adapterDir is not null) feeds[ForwardGraph.PositionIds] = HostTensor.Of(batch.PositionIds, batch.B, batch.T);
        float[] logits;
        using (var runner = new GraphRunner(runtime, graph))
        {
            logits = runner.Run(feeds, [TrainGraphs.Logits])[TrainGraphs.Logits].Floats();
        }
        var (loss, count) = CausalLmLoss(logits, batch.Labels, batch.B, batch.T, cfg.VocabSize);
        return new ScoreResult(batch, logits, cfg.VocabSize, loss, count);
    }

    /// <summary>
    /// Mean over rows and positions t &lt; T−1 with labels[t+1] ≠ −100 of −log softmax(logits[t])[labels[t+1]],
    /// in double precision; (NaN, 0) when no label counts.
    /// </summary>
    public static (double Loss, long Count) CausalLmLoss(float[] logits, long[] labels, int b, int t, int v)
    {
        double sum = 0;
        long count = 0;
        for (var row = 0; row < b; row++)
        {
            for (var pos = 0; pos + 1 < t; pos++)
            {
                var label = labels[(row * t) + pos + 1];
                if (label == Example.IgnoreIndex) continue;
                var z = logits.AsSpan(((row * t) + pos) * v, v);
                double max = double.NegativeInfinity, exp = 0;
                foreach (var x in z) max = Math.Max(max, x);
                foreach (var x in z) exp += Math.Exp(x - max);
                sum += max + Math.Log(exp) - z[(int)label];
                count++;
            }
        }
        return (count == 0 ? double.NaN : sum / count, count);
    }

    /// <summary>The adapter's tensors for the graph's trainable inputs; missing, extra or mis-shaped tensors are errors.</summary>
    public static Dictionary<string, HostTensor> AdapterFeeds(string adapterDir, IReadOnlyList<TrainableTensor> wanted)
    {
        var weights = AdapterWeights.Load(adapterDir);
        var feeds = new Dictionary<string, HostTensor>(StringComparer.Ordinal);
        foreach (var t in wanted)
        {
            if (!weights.TryGetValue(t.Key, out var w))
                throw Fail.User($"{adapterDir}: adapter tensor '{t.Key}' is missing", "the adapter weights do not match adapter_config.json and the model");
            if (!w.Shape.SequenceEqual(t.Shape))
            {
                throw Fail.User($"{adapterDir}: adapter tensor '{t.Key}' has shape {Fail.Show(w.Shape)}, the model and adapter_config.json need {Fail.Show(t.Shape)}",
                    "check that the adapter was trained for this model with this adapter_config.json");
            }
            feeds[t.Key] = HostTensor.Of(w.Data, t.Shape);
        }
        var extra = weights.Keys.Where(k => !feeds.ContainsKey(k)).ToList();
        if (extra.Count > 0)
        {
            throw Fail.User($"{adapterDir}: adapter tensor '{extra[0]}' ({extra.Count} unused in all) is not used by the adapter the config describes",
                "check that adapter_config.json (layers, experts, target_modules) belongs to these weights");
        }
        return feeds;
    }

    private static int PadId(ModelConfig cfg, string modelDir)
    {
        var pad = cfg.PadTokenId ?? 0;
        if (pad < 0 || pad >= cfg.VocabSize)
        {
            throw Fail.InFile(Path.Combine(modelDir, "config.json"), "key 'pad_token_id'", $"pad id {pad} is outside the vocabulary of {cfg.VocabSize}",
                "set pad_token_id to a token id below vocab_size (or remove it to pad with 0)");
        }
        return pad;
    }

    private static void CheckIds(IReadOnlyList<Example> examples, int vocab)
    {
        foreach (var ex in examples)
        {
            var i = Array.FindIndex(ex.InputIds, id => id >= vocab);
            if (i >= 0) throw Fail.User($"{ex.Source}: input_ids[{i}] = {ex.InputIds[i]} is not below the model's vocab_size {vocab}", "tokenize with the model's own tokenizer");
            var j = Array.FindIndex(ex.Labels, id => id >= vocab);
            if (j >= 0) throw Fail.User($"{ex.Source}: labels[{j}] = {ex.Labels[j]} is not below the model's vocab_size {vocab}", "labels are token ids of the model's vocabulary, or −100");
        }
    }
}
