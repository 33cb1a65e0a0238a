namespace MixLoRA.Inference.Tests;

[TestClass]
public sealed class CliSmokeTests
{
    [TestMethod]
    public void UnknownCommandIsAUsageError()
    {
        Assert.AreEqual(2, MixLoRA.Inference.Cli.Commands.Run(["no-such-command"]));
    }
}
