using System.Text.Json.Nodes;
using MixLoRA.Cli.Demo;
using MixLoRA.Trainer.Tests.Data;

namespace MixLoRA.Trainer.Tests.Demo;

/// <summary>
/// The demo's held-out records (issue 16 item 4): no held-out input occurs in training, and they are written beside
/// the training files. That the trained adapter beats the base model on them is asserted in Inference.Tests
/// (Docs/ReadmeCommandsTests), which shares one default demo run with the README walkthrough.
/// </summary>
[TestClass]
public sealed class DemoHeldOutTests
{
    [TestMethod]
    public void HeldOutInputsNeverOccurInTraining()
    {
        var tasks = DemoCorpus.Generate(7);
        foreach (var t in tasks)
        {
            Assert.IsNotEmpty(t.HeldOut, t.Name);
            Assert.HasCount(t.HeldOut.Count, t.HeldOutTexts);
            var train = t.Records.Select(Input).ToHashSet();
            foreach (var r in t.HeldOut) Assert.DoesNotContain(Input(r), train, $"{t.Name}: {Input(r)}");
        }
        // the written files: TASK.jsonl for training, TASK-heldout.jsonl beside it
        var dir = TestFiles.TempDir();
        foreach (var t in tasks)
        {
            DemoCorpus.Write(t, dir);
            Assert.HasCount(t.HeldOut.Count, File.ReadAllLines(Path.Combine(dir, t.HeldOutFileName)), t.HeldOutFileName);
        }
        Assert.IsTrue(File.Exists(Path.Combine(dir, "arc-heldout.jsonl")));
    }

    /// <summary>What the model is asked: an instruction record's input, an ARC record's ordered choices.</summary>
    private static string Input(JsonObject r) => r["input"] is { } input ? (string)input! : r["choices"]!["text"]!.ToJsonString();
}
