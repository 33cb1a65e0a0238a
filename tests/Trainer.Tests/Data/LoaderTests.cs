using MixLoRA.GraphBuilder;
using MixLoRA.Text.Data;

namespace MixLoRA.Trainer.Tests.Data;

[TestClass]
public sealed class LoaderTests
{
    const string Boolq = "{\"question\": \"is it so\", \"answer\": true, \"passage\": \"p\"}";
    static readonly string BoolqPrompt = "Please answer the following question with true or false: is it so?\nAnswer:";

    static IReadOnlyList<Example> Load(DatasetSpec spec) => DatasetLoader.Load(spec, new ByteTokenizer());

    static DatasetSpec Spec(params string[] data) => DatasetSpec.FromArgs(data);

    [TestMethod]
    public void PromptLabelsAreMasked_TargetKept()
    {
        string file = TestFiles.Write(TestFiles.TempDir(), "b.jsonl", Boolq + "\n");
        var ex = Load(Spec(file)).Single();
        int promptLen = 1 + ByteTokenizer.Bytes(BoolqPrompt).Length;
        Assert.AreEqual(promptLen, ex.PromptLength);
        Assert.IsTrue(ex.Labels[..promptLen].All(l => l == -100));
        CollectionAssert.AreEqual(ByteTokenizer.Bytes(" true"), ex.Labels[promptLen..]);
    }

    [TestMethod]
    public void TrainOnInputs_KeepsEveryLabel()
    {
        string file = TestFiles.Write(TestFiles.TempDir(), "b.jsonl", Boolq + "\n");
        var ex = Load(Spec(file) with { TrainOnInputs = true }).Single();
        CollectionAssert.AreEqual(ex.InputIds, ex.Labels);
    }

    [TestMethod]
    public void AppendEos_AddsOneEos()
    {
        string file = TestFiles.Write(TestFiles.TempDir(), "b.jsonl", Boolq + "\n");
        var plain = Load(Spec(file)).Single();
        var eos = Load(Spec(file) with { AppendEos = true }).Single();
        Assert.AreEqual(plain.Length + 1, eos.Length);
        Assert.AreEqual(ByteTokenizer.Eos, eos.InputIds[^1]);
        Assert.AreEqual(ByteTokenizer.Eos, eos.Labels[^1]);
    }

    [TestMethod]
    public void CutoffTruncatesIdsAndLabels()
    {
        string file = TestFiles.Write(TestFiles.TempDir(), "t.jsonl",
            "{\"input_ids\": [1,2,3,4,5,6,7,8], \"labels\": [-100,-100,-100,4,5,6,7,8]}\n{\"input_ids\": [1,2]}\n");
        var ex = Load(Spec(file) with { CutoffLen = 5, MaxSequenceLength = 6 });
        CollectionAssert.AreEqual(new[] { 1, 2, 3, 4, 5 }, ex[0].InputIds);
        CollectionAssert.AreEqual(new[] { -100, -100, -100, 4, 5 }, ex[0].Labels);
        Assert.AreEqual(3, ex[0].PromptLength);
        CollectionAssert.AreEqual(new[] { 1, 2 }, ex[1].Labels, "labels default to input_ids");
    }

    [TestMethod]
    public void TooLongWithoutCutoff_NamesFileLineLengthLimitAndFlag()
    {
        string file = TestFiles.Write(TestFiles.TempDir(), "t.jsonl", "{\"input_ids\": [1,2]}\n\n{\"input_ids\": [1,2,3,4,5,6,7]}\n");
        var e = Assert.ThrowsExactly<UserError>(() => Load(Spec(file) with { MaxSequenceLength = 4 }));
        StringAssert.Contains(e.Message, file);
        StringAssert.Contains(e.Message, "line 3");
        StringAssert.Contains(e.Message, "7 tokens");
        StringAssert.Contains(e.Message, "sequence length 4");
        StringAssert.Contains(e.Message, "--cutoff-len");
    }

    [TestMethod]
    public void CutoffLongerThanGraph_IsAnError()
    {
        string file = TestFiles.Write(TestFiles.TempDir(), "t.jsonl", "{\"input_ids\": [1,2]}\n");
        var e = Assert.ThrowsExactly<UserError>(() => Load(Spec(file) with { CutoffLen = 9, MaxSequenceLength = 4 }));
        StringAssert.Contains(e.Message, "--cutoff-len 9");
    }

    [TestMethod]
    public void BadJsonlLine_NamesFileAndLine()
    {
        string file = TestFiles.Write(TestFiles.TempDir(), "x.jsonl", Boolq + "\n" + Boolq + "\n{\"question\": \"oops\",\n");
        var e = Assert.ThrowsExactly<UserError>(() => Load(Spec(file)));
        StringAssert.Contains(e.Message, file + ": line 3:");
    }

    [TestMethod]
    public void BadJsonArray_NamesLineAndByte()
    {
        string file = TestFiles.Write(TestFiles.TempDir(), "x.json", "[\n  {\"input_ids\": [1]},\n  {\"input_ids\": [1,]}\n]");
        var e = Assert.ThrowsExactly<UserError>(() => Load(Spec(file)));
        StringAssert.Contains(e.Message, file + ": line 3, byte");
    }

    [TestMethod]
    public void JsonArrayRecordErrors_NameRecordAndLine()
    {
        string file = TestFiles.Write(TestFiles.TempDir(), "x.json", "[\n  {\"input_ids\": [1]},\n\n  {\"input_ids\": [1, 2], \"labels\": [1]}\n]");
        var e = Assert.ThrowsExactly<UserError>(() => Load(Spec(file)));
        StringAssert.Contains(e.Message, "record 2 (line 4)");
        StringAssert.Contains(e.Message, "labels has 1 entries but input_ids has 2");
    }

    [TestMethod]
    public void MissingField_NamesFieldAndLine()
    {
        string file = TestFiles.Write(TestFiles.TempDir(), "p.jsonl",
            "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\", \"label\": 0}\n{\"goal\": \"g\", \"sol1\": \"a\", \"label\": 1}\n");
        var e = Assert.ThrowsExactly<UserError>(() => Load(Spec(file)));
        StringAssert.Contains(e.Message, "line 2");
        StringAssert.Contains(e.Message, "'sol2'");
    }

    [TestMethod]
    public void UnknownLayout_ListsTheTaskNames()
    {
        string file = TestFiles.Write(TestFiles.TempDir(), "u.jsonl", "{\"text\": \"hello\"}\n");
        var e = Assert.ThrowsExactly<UserError>(() => Load(Spec(file)));
        StringAssert.Contains(e.Message, "'text'");
        StringAssert.Contains(e.Message, "arc-e");
    }

    [TestMethod]
    public void MultiTask_ConcatenatesFilesInOrder_WithTheirTasks()
    {
        var s = TestFiles.Samples;
        var ex = Load(Spec(Path.Combine(s, "tokens.jsonl"), "arc-e:" + Path.Combine(s, "arc-e.jsonl"), Path.Combine(s, "piqa.jsonl")));
        CollectionAssert.AreEqual(new[] { "tokens", "tokens", "tokens", "arc-e", "arc-e", "arc-e", "piqa", "piqa", "piqa" },
            ex.Select(e => e.Task).ToArray());
        StringAssert.EndsWith(ex[4].Source, "arc-e.jsonl: line 2");
    }

    [TestMethod]
    public void DataSourceParse_OnlyKnownTaskNamesArePrefixes()
    {
        Assert.AreEqual("boolq", DataSource.Parse("boolq:/d/b.jsonl").Task!.Name);
        Assert.AreEqual("/d/b.jsonl", DataSource.Parse("boolq:/d/b.jsonl").Path);
        Assert.IsNull(DataSource.Parse("weird:name.jsonl").Task);
        Assert.AreEqual("weird:name.jsonl", DataSource.Parse("weird:name.jsonl").Path);
    }

    [TestMethod]
    public void ForcedTaskThatDoesNotFit_IsAnError()
    {
        var e = Assert.ThrowsExactly<UserError>(() => Load(Spec("obqa:" + Path.Combine(TestFiles.Samples, "arc-e.jsonl"))));
        StringAssert.Contains(e.Message, "'question_stem'");
    }

    [TestMethod]
    public void MissingFile_IsAUserError()
    {
        var e = Assert.ThrowsExactly<UserError>(() => Load(Spec("/no/such/file.jsonl")));
        StringAssert.Contains(e.Message, "/no/such/file.jsonl");
    }
}
