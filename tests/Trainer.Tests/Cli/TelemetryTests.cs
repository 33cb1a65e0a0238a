using System.Diagnostics;
using MixLoRA.Cli;
using MixLoRA.Trainer.Tests.Data;

namespace MixLoRA.Trainer.Tests.Cli;

/// <summary>ONNX Runtime's usage telemetry stays off: a run leaves no device id or event queue in the user's cache.</summary>
[TestClass]
public sealed class TelemetryTests
{
    [TestMethod]
    public void ARunWritesNothingUnderTheUsersCache()
    {
        var home = TestFiles.TempDir();
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, RedirectStandardError = true };
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath) != Path.GetFileNameWithoutExtension(typeof(Commands).Assembly.Location))
            psi.ArgumentList.Add(typeof(Commands).Assembly.Location);                      // dotnet testhost → dotnet app.dll
        foreach (var a in new[] { "doctor", "--device", "cpu", "--smoke" }) psi.ArgumentList.Add(a);
        psi.Environment["HOME"] = home;
        psi.Environment.Remove("ORT_DISABLE_TELEMETRY");
        psi.Environment.Remove("ORT_TELEMETRY_DISABLED");
        psi.Environment.Remove("XDG_CACHE_HOME");
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.AreEqual(0, p.ExitCode, output + err.Result);
        StringAssert.Contains(output, "bound run ... ok");
        var cache = Path.Combine(home, ".cache", "Microsoft", "DeveloperTools");
        Assert.IsFalse(Directory.Exists(cache), $"ONNX Runtime wrote {string.Join(", ", Directory.Exists(cache) ? Directory.GetFileSystemEntries(cache, "*", SearchOption.AllDirectories) : [])}");
    }
}
