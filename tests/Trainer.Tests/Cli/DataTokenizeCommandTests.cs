using System.Text.Json;
using MixLoRA.Cli;
using MixLoRA.GraphBuilder;
using MixLoRA.Trainer.Tests.Tokenization;

namespace MixLoRA.Trainer.Tests.Cli;

/// <summary>`mixlora-data tokenize` end to end on temp files with the real LLaMA-3 tokenizer.</summary>
[TestClass]
public sealed class DataTokenizeCommandTests
{
    [TestMethod]
    public void TokenizesJsonlLikeHf()
    {
        var dir = Directory.CreateTempSubdirectory("mixlora-cli-").FullName;
        try
        {
            var rows = RealTokenizers.Expected("llama3");
            string input = Path.Combine(dir, "in.jsonl"), output = Path.Combine(dir, "sub", "out.jsonl");
            File.WriteAllLines(input, rows.Select(r => JsonSerializer.Serialize(new { text = r.Text, other = 1 })).Append(""));
            int rc = Commands.Run(["data", "tokenize", "--tokenizer", RealTokenizers.File("llama3"), "--input", input, "--out", output]);
            Assert.AreEqual(0, rc);
            var lines = File.ReadAllLines(output);
            Assert.HasCount(rows.Count, lines);
            for (int i = 0; i < rows.Count; i++)
            {
                using var doc = JsonDocument.Parse(lines[i]);
                Assert.AreEqual(rows[i].Text, doc.RootElement.GetProperty("text").GetString());
                CollectionAssert.AreEqual(rows[i].Ids, doc.RootElement.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray());
            }
            Assert.HasCount(2, Directory.GetFileSystemEntries(dir), "no temp files left beside the output");
            Assert.HasCount(1, Directory.GetFileSystemEntries(Path.Combine(dir, "sub")));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    [DataRow("{\"text\": \"ok\"}\n{\"txt\": \"no text key\"}\n", "line 2", "\"text\"")]
    [DataRow("{\"text\": \"ok\"}\n\n{\"text\": \"ok\"}\n{oops\n", "line 4", "not valid JSON")]
    [DataRow("{\"text\": 5}\n", "line 1", "not a string")]
    public void BadRecordNamesFileAndLine(string content, string where, string what)
    {
        var dir = Directory.CreateTempSubdirectory("mixlora-cli-").FullName;
        try
        {
            string input = Path.Combine(dir, "in.jsonl"), output = Path.Combine(dir, "out.jsonl");
            File.WriteAllText(input, content);
            var e = Assert.ThrowsExactly<UserError>(() =>
                DataTokenizeCommand.Run(["--tokenizer", RealTokenizers.File("llama3"), "--input", input, "--out", output]));
            StringAssert.Contains(e.Message, input);
            StringAssert.Contains(e.Message, where);
            StringAssert.Contains(e.Message, what);
            Assert.IsFalse(File.Exists(output));
            Assert.HasCount(1, Directory.GetFiles(dir), "the temp file is removed");
            Assert.AreEqual(1, Commands.Run(["data", "tokenize", "--tokenizer", RealTokenizers.File("llama3"), "--input", input, "--out", output]));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void MissingRequiredOptionIsAUsageError()
    {
        Assert.AreNotEqual(0, Commands.Run(["data", "tokenize", "--input", "x.jsonl"]));
        Assert.AreEqual(2, Commands.Run(["data", "no-such-subcommand"]));
    }
}
