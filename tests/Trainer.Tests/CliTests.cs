namespace MixLoRA.Trainer.Tests;

[TestClass]
public sealed class CliSmokeTests
{
    [TestMethod]
    public void UnknownCommandIsAUsageError()
    {
        Assert.AreEqual(2, MixLoRA.Cli.Commands.Run(["no-such-command"]));
    }
}
