using System.Text.Json;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.Inference.Export;
using MixLoRA.Inference.Generation;
using MixLoRA.Runtime;
using MixLoRA.Text.Data;
using MixLoRA.Text.Tokenization;

namespace MixLoRA.Inference.Evaluation;

/// <summary>One scored question: the right label, the predicted one.</summary>
public sealed record EvalPrediction(int Index, string Answer, string Predicted)
{
    public bool Correct => Answer == Predicted;
}

/// <summary>Accuracy and, for MixLoRA, the share of routing slots each expert got per layer (rows sum to 1).</summary>
public sealed record EvalReport(string Task, int Count, int Correct, IReadOnlyList<EvalPrediction> Predictions, IReadOnlyList<double[]>? ExpertLoad)
{
    public double Accuracy => Count == 0 ? 0 : (double)Correct / Count;
}

/// <summary>
/// Commonsense scoring as the reference evaluator does: the logits at the last prompt token, restricted to the
/// label tokens (the last id of <c>encode(" " + label)</c> without special tokens), argmax. Expert load comes from
/// the router outputs (<c>router.{l}.experts</c>, <c>router.{l}.selected</c>) when the graph has them.
/// </summary>
public static class CommonsenseEval
{
    /// <summary>The token scored for each answer label.</summary>
    public static int[] LabelTokens(ITokenizer tokenizer, IReadOnlyList<string> labels) => labels.Select(l =>
    {
        var ids = tokenizer.Encode(" " + l, addSpecialTokens: false);
        return ids.Count > 0 ? ids[^1] : throw Fail.User($"answer label '{l}' encodes to no token", "check the tokenizer and the data file");
    }).ToArray();

    /// <summary>The index of the label whose token has the largest logit (first of ties).</summary>
    public static int Choose(ReadOnlySpan<float> lastLogits, int[] labelTokens)
    {
        var best = 0;
        for (var i = 1; i < labelTokens.Length; i++) if (lastLogits[labelTokens[i]] > lastLogits[labelTokens[best]]) best = i;
        return best;
    }

    public static EvalReport Run(ExportedModel model, ITokenizer tokenizer, IReadOnlyList<CommonsenseItem> items, string task, TextWriter? progress = null)
    {
        var predictions = new List<EvalPrediction>();
        double[][]? load = null;
        for (var i = 0; i < items.Count; i++)
        {
            var item = items[i];
            var ids = tokenizer.Encode(item.Prompt, addSpecialTokens: true).Select(x => (long)x).ToArray();
            if (ids.Length > model.Config.MaxPositionEmbeddings)
            {
                throw Fail.InFile(item.Source, "prompt", $"{ids.Length} tokens, over the model's context of {model.Config.MaxPositionEmbeddings}", "shorten the record or drop it");
            }
            var positions = Enumerable.Range(0, ids.Length).Select(x => (long)x).ToArray();
            using var empty = model.EmptyCache(1);
            var step = model.Forward(ids, positions, Enumerable.Repeat(1L, ids.Length).ToArray(), 1, empty);
            using (step.Cache)
            {
                var choice = Choose(step.Row(0, ids.Length - 1), LabelTokens(tokenizer, item.AnswerLabels));
                predictions.Add(new EvalPrediction(i, item.Answer, item.AnswerLabels[choice]));
                load = AddLoad(load, step.Extra);
            }
            if (progress != null && (i + 1) % 50 == 0) progress.WriteLine($"{i + 1}/{items.Count}");
        }
        var report = new EvalReport(task, predictions.Count, predictions.Count(p => p.Correct), predictions, load?.Select(Normalize).ToArray());
        return report;
    }

    // counts[l][e] += Σ over tokens and slots of selected where experts == e
    private static double[][]? AddLoad(double[][]? counts, IReadOnlyDictionary<string, HostTensor> extra)
    {
        var layers = 0;
        while (extra.ContainsKey(Exporter.RouterExperts(layers))) layers++;
        if (layers == 0) return counts;
        for (var l = 0; l < layers; l++)
        {
            var experts = extra[Exporter.RouterExperts(l)].Longs();
            var selected = extra[Exporter.RouterSelected(l)].Floats();
            counts ??= new double[layers][];
            var max = (int)experts.Max() + 1;
            counts[l] ??= [];
            if (counts[l].Length < max) Array.Resize(ref counts[l], max);
            for (var k = 0; k < experts.Length; k++) counts[l][experts[k]] += selected[k];
        }
        return counts;
    }

    private static double[] Normalize(double[] c)
    {
        var sum = c.Sum();
        return sum == 0 ? c : c.Select(x => x / sum).ToArray();
    }

    /// <summary>The report as JSON (task, counts, accuracy, expert_load per layer or null, predictions), written atomically.</summary>
    public static void Save(string path, EvalReport r, string data, string model, string? adapter) => AtomicFile.Write(path, s =>
    {
        using var w = new Utf8JsonWriter(s, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteString("task", r.Task);
        w.WriteString("data", data);
        w.WriteString("model", model);
        if (adapter != null) w.WriteString("adapter", adapter);
        else w.WriteNull("adapter");
        w.WriteNumber("count", r.Count);
        w.WriteNumber("correct", r.Correct);
        w.WriteNumber("accuracy", r.Accuracy);
        w.WritePropertyName("expert_load");
        if (r.ExpertLoad is null) w.WriteNullValue();
        else
        {
            w.WriteStartArray();
            foreach (var layer in r.ExpertLoad)
            {
                w.WriteStartArray();
                foreach (var x in layer) w.WriteNumberValue(x);
                w.WriteEndArray();
            }
            w.WriteEndArray();
        }
        w.WriteStartArray("predictions");
        foreach (var p in r.Predictions)
        {
            w.WriteStartObject();
            w.WriteNumber("index", p.Index);
            w.WriteString("answer", p.Answer);
            w.WriteString("predicted", p.Predicted);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    });
}
