using MixLoRA.Cli;
using MixLoRA.Inference.Tests.Fixtures;

namespace MixLoRA.Inference.Tests;

[TestClass]
public sealed class CliSmokeTests
{
    [TestMethod]
    public void UnknownCommandIsAUsageError()
    {
        Assert.AreEqual(2, Commands.Run(["no-such-command"]));
    }

    [TestMethod]
    public void ExportWritesTheFolderAndUserMistakesExitWithOne()
    {
        var outDir = Files.TempDir();
        Assert.AreEqual(0, Commands.Run(["export", "--model", Files.ParityModel, "--out", outDir, "--dtype", "float16"]));
        foreach (var f in new[] { "model.onnx", "model.onnx.data", "genai_config.json", "config.json" }) Assert.IsTrue(File.Exists(Path.Combine(outDir, f)), f);
        Assert.AreEqual(1, Commands.Run(["export", "--model", Path.Combine(outDir, "nope"), "--out", Files.TempDir()]));
        Assert.AreEqual(1, Commands.Run(["export", "--model", Files.ParityModel, "--out", Files.TempDir(), "--merge-attention-lora"]));
        var adapter = Path.Combine(Files.Parity(), "expected", "adapter_final");
        Assert.AreEqual(1, Commands.Run(["export", "--model", Files.ParityModel, "--adapter", adapter, "--out", Files.TempDir(), "--merge-attention-lora", "--onnx-adapter"]));
    }

    [TestMethod]
    public void GenerateStreamsFromAnExportedFolder()
    {
        var outDir = Files.TempDir();
        Assert.AreEqual(0, Commands.Run(["export", "--model", Files.ParityModel, "--out", outDir]));
        var services = new CommandServices(_ => new SmallTokenizer());
        Assert.AreEqual(0, Commands.Run(["generate", "--model", outDir, "--prompt", "Hi", "--max-new-tokens", "4"], services));
        Assert.AreEqual(1, Commands.Run(["generate", "--model", outDir, "--prompt", "Hi", "--top-p", "0"], services));
    }
}
