using System.Text.Json;
using MixLoRA.Cli;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.Inference.Evaluation;
using MixLoRA.Inference.Export;
using MixLoRA.Inference.Generation;
using MixLoRA.Inference.Tests.Fixtures;
using MixLoRA.Text.Data;

namespace MixLoRA.Inference.Tests.Evaluation;

/// <summary>Commonsense scoring on the sample files of the five layouts, checked against a direct computation.</summary>
[TestClass]
public sealed class EvalTests
{
    [TestMethod]
    [DataRow("arc-e")]
    [DataRow("arc-c")]
    [DataRow("boolq")]
    [DataRow("obqa")]
    [DataRow("piqa")]
    public void PredictionsAreTheArgmaxOverLabelTokensAtTheLastPromptToken(string task)
    {
        var items = RecordText.ReadCommonsense(new DataSource(Path.Combine(Files.Samples, task + ".jsonl"), TaskType.Known[task]));
        var res = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir()));
        using var m = new ExportedModel(res.OutDir);
        var tok = new SmallTokenizer();
        var report = CommonsenseEval.Run(m, tok, items, task);

        Assert.AreEqual(items.Count, report.Count);
        Assert.IsNull(report.ExpertLoad, "no MixLoRA, no expert load");
        var v = m.Config.VocabSize;
        var correct = 0;
        for (var i = 0; i < items.Count; i++)
        {
            // direct: forward graph logits at the last prompt token, over each label's token (the last id of " " + label)
            var ids = tok.Encode(items[i].Prompt).Select(x => (long)x).ToArray();
            var logits = Reference.ForwardLogits(Files.ParityModel, ids, Enumerable.Repeat(1L, ids.Length).ToArray(), 1);
            var scores = items[i].AnswerLabels.Select(l => logits[((ids.Length - 1) * v) + tok.Encode(" " + l, addSpecialTokens: false)[^1]]).ToList();
            var want = items[i].AnswerLabels[scores.IndexOf(scores.Max())];
            Assert.AreEqual(want, report.Predictions[i].Predicted, $"{task} item {i}");
            Assert.AreEqual(items[i].Answer, report.Predictions[i].Answer);
            if (want == items[i].Answer) correct++;
        }
        Assert.AreEqual(correct, report.Correct);
    }

    [TestMethod]
    public void MixLoraEvalReportsExpertLoadPerLayerAndTheCliWritesTheReport()
    {
        var parity = Files.Parity();
        var adapter = Path.Combine(parity, "expected", "adapter_final");
        var cfg = AdapterConfig.Load(adapter);
        var outFile = Path.Combine(Files.TempDir(), "report.json");
        var data = Path.Combine(Files.Samples, "piqa.jsonl");
        Assert.AreEqual(0, Commands.Run(["eval", "--model", Files.ParityModel, "--adapter", adapter, "--task", "piqa", "--data", data, "--out", outFile],
            new CommandServices(_ => new SmallTokenizer())));

        using var doc = JsonDocument.Parse(File.ReadAllText(outFile));
        var root = doc.RootElement;
        var load = root.GetProperty("expert_load").EnumerateArray().Select(l => l.EnumerateArray().Select(x => x.GetDouble()).ToArray()).ToArray();
        Assert.HasCount(2, load);
        foreach (var layer in load)
        {
            Assert.HasCount(cfg.NumExperts, layer);
            Assert.AreEqual(1.0, layer.Sum(), 1e-9);
        }
        var items = RecordText.ReadCommonsense(new DataSource(data, TaskType.Known["piqa"]));
        Assert.AreEqual(items.Count, root.GetProperty("count").GetInt32());
        var preds = root.GetProperty("predictions").EnumerateArray().ToList();
        Assert.AreEqual(preds.Count(p => p.GetProperty("answer").GetString() == p.GetProperty("predicted").GetString()), root.GetProperty("correct").GetInt32());
        Assert.AreEqual(root.GetProperty("correct").GetDouble() / items.Count, root.GetProperty("accuracy").GetDouble(), 1e-12);
    }
}
