using MixLoRA.Text.Data;

namespace MixLoRA.Trainer.Tests.Data;

/// <summary>
/// Every template against the text of docs/design.md §7 and the Stanford Alpaca prompt, written out here
/// literally (not built with the code under test), on the sample files of each public layout.
/// </summary>
[TestClass]
public sealed class TemplateTests
{
    static IReadOnlyList<Example> Load(string file, string? task = null, bool trainOnInputs = false) =>
        DatasetLoader.Load(new DatasetSpec([DataSource.Parse(task is null ? Path.Combine(TestFiles.Samples, file) : $"{task}:{Path.Combine(TestFiles.Samples, file)}")])
        { TrainOnInputs = trainOnInputs }, new ByteTokenizer());

    static string PromptOf(Example e) => new ByteTokenizer().Decode(e.InputIds[..e.PromptLength], skipSpecialTokens: true);
    static string TargetOf(Example e) => new ByteTokenizer().Decode(e.InputIds[e.PromptLength..], skipSpecialTokens: true);

    [TestMethod]
    public void ArcEasy_PromptAndTarget()
    {
        var ex = Load("arc-e.jsonl");
        Assert.AreEqual("Please choose the correct answer to the question: Which tool is best for measuring the length of a pencil?"
            + " (A) a ruler (B) a thermometer (C) a scale (D) a stopwatch\nAnswer:", PromptOf(ex[0]));
        Assert.AreEqual(" A", TargetOf(ex[0]));
        Assert.AreEqual("Please choose the correct answer to the question: Which of these is a liquid at room temperature?"
            + " (1) ice (2) steam (3) water\nAnswer:", PromptOf(ex[2]));
        Assert.AreEqual(" 3", TargetOf(ex[2]));
        Assert.AreEqual("arc", ex[0].Task, "auto-detected ARC files are named 'arc'");
    }

    [TestMethod]
    public void ArcChallenge_ForcedTaskName()
    {
        var ex = Load("arc-c.jsonl", "arc-c");
        Assert.AreEqual("Please choose the correct answer to the question: Which property of a mineral is tested by scratching it on a tile?"
            + " (A) streak (B) luster (C) hardness (D) cleavage (E) density\nAnswer:", PromptOf(ex[2]));
        Assert.AreEqual(" A", TargetOf(ex[2]));
        Assert.IsTrue(ex.All(e => e.Task == "arc-c"));
    }

    [TestMethod]
    public void BoolQ_NoPassage_TrueFalse()
    {
        var ex = Load("boolq.jsonl");
        Assert.AreEqual("Please answer the following question with true or false: is a tomato botanically a fruit?\nAnswer:", PromptOf(ex[0]));
        Assert.AreEqual(" true", TargetOf(ex[0]));
        Assert.AreEqual(" false", TargetOf(ex[1]));
        Assert.AreEqual("boolq", ex[0].Task);
    }

    [TestMethod]
    public void OpenBookQA_UsesQuestionStem()
    {
        var ex = Load("obqa.jsonl");
        Assert.AreEqual("Please choose the correct answer to the question: A magnet will stick to"
            + " (A) a wooden spoon (B) an iron nail (C) a glass cup (D) a paper towel\nAnswer:", PromptOf(ex[0]));
        Assert.AreEqual(" B", TargetOf(ex[0]));
        Assert.AreEqual("obqa", ex[0].Task);
    }

    [TestMethod]
    public void Piqa_LabelZeroIsA_OneIsB()
    {
        var ex = Load("piqa.jsonl");
        Assert.AreEqual("Below is a common task along with two possible solutions labeled (A) and (B). Please select the appropriate solution to achieve the task:\n"
            + "Loosen a tight jar lid.\n\n(A) Put the jar in the freezer overnight.\n(B) Run the lid under hot water for a minute.\n\nCorrect solution:", PromptOf(ex[1]));
        Assert.AreEqual(" B", TargetOf(ex[1]));
        Assert.AreEqual(" A", TargetOf(ex[0]));
        Assert.AreEqual("piqa", ex[0].Task);
    }

    [TestMethod]
    public void Alpaca_WithAndWithoutInput()
    {
        var ex = Load("instruction.json");
        Assert.AreEqual("Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n"
            + "### Instruction:\nGive a synonym for the word.\n\n### Input:\nhappy\n\n### Response:\n", PromptOf(ex[0]));
        Assert.AreEqual("joyful\n", TargetOf(ex[0]));
        Assert.AreEqual("Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
            + "### Instruction:\nName three primary colors.\n\n### Response:\n", PromptOf(ex[1]), "an empty input counts as none");
        Assert.AreEqual("Red, blue and yellow.\n", TargetOf(ex[1]));
    }

    [TestMethod]
    public void Plain_WithAndWithoutInput()
    {
        var ex = Load("instruction.json", "plain");
        Assert.AreEqual("Give a synonym for the word.\nhappy\n", PromptOf(ex[0]));
        Assert.AreEqual("Name three primary colors.\n", PromptOf(ex[1]));
        Assert.AreEqual("Bonjour.\n", TargetOf(ex[2]));
    }

    [TestMethod]
    public void TextIsEncodedWithBosAndNoEos_AsTheReference()
    {
        var ex = Load("boolq.jsonl")[2];
        string full = "Please answer the following question with true or false: does the moon produce its own light?\nAnswer: false";
        CollectionAssert.AreEqual(new[] { ByteTokenizer.Bos }.Concat(ByteTokenizer.Bytes(full)).ToArray(), ex.InputIds);
    }

    [TestMethod]
    public void CommonsenseItems_GiveAnswerLabels()
    {
        var arc = RecordText.ReadCommonsense(DataSource.Parse(Path.Combine(TestFiles.Samples, "arc-e.jsonl")));
        CollectionAssert.AreEqual(new[] { "1", "2", "3" }, arc[2].AnswerLabels.ToArray());
        Assert.AreEqual("3", arc[2].Answer);
        var boolq = RecordText.ReadCommonsense(DataSource.Parse(Path.Combine(TestFiles.Samples, "boolq.jsonl")));
        CollectionAssert.AreEqual(new[] { "true", "false" }, boolq[0].AnswerLabels.ToArray());
        var piqa = RecordText.ReadCommonsense(DataSource.Parse(Path.Combine(TestFiles.Samples, "piqa.jsonl")));
        Assert.AreEqual("B", piqa[1].Answer);
        CollectionAssert.AreEqual(new[] { "A", "B" }, piqa[1].AnswerLabels.ToArray());
    }
}
