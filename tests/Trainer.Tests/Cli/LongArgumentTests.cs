using MixLoRA.Cli;
using MixLoRA.Trainer.Tests.Fixtures;

namespace MixLoRA.Trainer.Tests.Cli;

/// <summary>
/// An argument over <see cref="CliHost.MaxArgumentLength"/> characters (issue 17: a CLR fatal error past ~33,000)
/// is refused before anything parses it: one `error:` line naming the option, the argument's start and its
/// length, pointing to --prompt-file / --data FILE; exit 1.
/// </summary>
[TestClass]
[DoNotParallelize]
public sealed class LongArgumentTests
{
    private static readonly string Long = "Tell me a story. " + new string('a', 40_000);

    private static void AssertRefused(int code, string err)
    {
        Assert.AreEqual(1, code, err);
        Assert.AreEqual(1, err.Trim().Split('\n').Length, $"one line:\n{err[..Math.Min(err.Length, 500)]}");
        StringAssert.StartsWith(err, "error: the argument of --prompt 'Tell me a story. aaaaaaaaaaaaaaaaaaaaaaa…' is 40,017 characters long");
        StringAssert.Contains(err, "--prompt-file");
        Assert.IsLessThan(400, err.Length, "the argument itself is not echoed");
    }

    [TestMethod]
    public void InProcess()
    {
        var (code, err) = CliCapture.Run("generate", "--model", "/nonexistent", "--prompt", Long);
        AssertRefused(code, err);
        var atLimit = CliCapture.Run("generate", "--model", "/nonexistent", "--prompt", new string('a', CliHost.MaxArgumentLength));
        StringAssert.Contains(atLimit.Err, "--model folder '/nonexistent' does not exist", "an argument at the limit is taken");
        var bare = CliCapture.Run("train", "--data", "x", new string('b', 50_000));
        StringAssert.StartsWith(bare.Err, "error: the argument 'bbbb", "a bare argument is named by its start");
    }

    [TestMethod]
    public void InAChildProcess()
    {
        var r = ChildCli.Finish(ChildCli.Start(["generate", "--model", "/nonexistent", "--prompt", Long]));
        AssertRefused(r.Code, r.Err);
    }
}
