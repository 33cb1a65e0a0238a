using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Tests.Fixtures;

namespace MixLoRA.Trainer.Tests.Cli;

/// <summary>ONNX Runtime's usage telemetry stays off: a run leaves no device id or event queue in the user's cache.</summary>
[TestClass]
public sealed class TelemetryTests
{
    [TestMethod]
    public void ARunWritesNothingUnderTheUsersCache()
    {
        var home = TestFiles.TempDir();
        using var p = ChildCli.Start(["doctor", "--device", "cpu", "--smoke"], new Dictionary<string, string?>
        {
            ["HOME"] = home, ["ORT_DISABLE_TELEMETRY"] = null, ["ORT_TELEMETRY_DISABLED"] = null, ["XDG_CACHE_HOME"] = null,
        });
        var (code, output, err) = ChildCli.Finish(p);
        Assert.AreEqual(0, code, output + err);
        StringAssert.Contains(output, "bound run ... ok");
        var cache = Path.Combine(home, ".cache", "Microsoft", "DeveloperTools");
        Assert.IsFalse(Directory.Exists(cache), $"ONNX Runtime wrote {string.Join(", ", Directory.Exists(cache) ? Directory.GetFileSystemEntries(cache, "*", SearchOption.AllDirectories) : [])}");
    }
}
