using MixLoRA.Cli;
using MixLoRA.GraphBuilder;
using MixLoRA.Runtime;
using MixLoRA.Trainer.Tests.Data;
using MixLoRA.Trainer.Tests.Fixtures;

namespace MixLoRA.Trainer.Tests.Settings;

/// <summary>
/// The runtime settings are read once (Program.Main: the environment) and passed explicitly to the commands
/// (<see cref="CommandServices.Settings"/>); nothing reads them from static state. Observed through
/// MIXLORA_DEBUG: an ONNX Runtime failure is one `error:` line without it and keeps its stack trace with it.
/// </summary>
[TestClass]
[DoNotParallelize]
public sealed class SettingsFlowTests
{
    private static string BadGraph()
    {
        var path = Path.Combine(TestFiles.TempDir(), "bad.onnx");
        File.WriteAllBytes(path, [1, 2, 3, 4, 5, 6, 7, 8]);
        return path;
    }

    [TestMethod]
    public void TheSettingsGivenToTheCommandsAreTheOnesUsed()
    {
        Assert.IsNull(typeof(RuntimeSettings).GetProperty("Process"), "no process-wide settings accessor");
        var graph = BadGraph();
        var plain = CliCapture.Run(new CommandServices(_ => throw Fail.Bug("no tokenizer")), "doctor", "--graph", graph);
        Assert.AreEqual(1, plain.Code, plain.Err);
        Assert.AreEqual(1, plain.Err.Trim().Split('\n').Length, plain.Err);
        StringAssert.StartsWith(plain.Err, "error: ONNX Runtime rejected the graph on Cpu");
        StringAssert.Contains(plain.Err, "MIXLORA_DEBUG=1");

        var debug = new CommandServices(_ => throw Fail.Bug("no tokenizer")) { Settings = RuntimeSettings.Default with { Debug = true } };
        var e = Assert.ThrowsExactly<UserError>(() => CliCapture.Run(debug, "doctor", "--graph", graph));
        Assert.IsInstanceOfType<Microsoft.ML.OnnxRuntime.OnnxRuntimeException>(e.InnerException, "the native error travels with it");
    }

    [TestMethod]
    public void TheExecutableReadsTheEnvironmentAtStartUp()
    {
        var graph = BadGraph();
        var plain = ChildCli.Finish(ChildCli.Start(["doctor", "--graph", graph]));
        Assert.AreEqual(1, plain.Code, plain.Err);
        Assert.DoesNotContain("   at ", plain.Err, "no stack trace without MIXLORA_DEBUG");
        var debug = ChildCli.Finish(ChildCli.Start(["doctor", "--graph", graph], new Dictionary<string, string?> { ["MIXLORA_DEBUG"] = "1" }));
        Assert.AreNotEqual(0, debug.Code);
        Assert.Contains("   at ", debug.Err, "MIXLORA_DEBUG=1 from the environment keeps the stack trace");
    }
}
