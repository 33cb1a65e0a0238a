using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.Inference.Export;
using MixLoRA.Inference.Generation;
using MixLoRA.Inference.Tests.Fixtures;

namespace MixLoRA.Inference.Tests.Export;

/// <summary>An .onnx_adapter is validated when loaded: truncated files, and adapters given to a merged export, are one-line user errors.</summary>
[TestClass]
public sealed class OnnxAdapterCheckTests
{
    private static (string Shared, string File) Exported()
    {
        var cfg = ModelConfig.Load(Files.ParityModel);
        var (adapterDir, _) = TestLora.WriteAdapter(cfg, 4, 8, 3, "q_proj", "v_proj");
        var shared = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir()) { AdapterDir = adapterDir, OnnxAdapter = true }).OutDir;
        return (shared, Path.Combine(shared, Exporter.AdapterFile));
    }

    [TestMethod]
    public void ATruncatedAdapterFileIsRefused()
    {
        var (shared, file) = Exported();
        using (var ok = new ExportedModel(shared, onnxAdapter: file)) Assert.IsNotNull(ok.Config);
        var bytes = File.ReadAllBytes(file);
        var cut = Path.Combine(Files.TempDir(), "cut.onnx_adapter");
        File.WriteAllBytes(cut, bytes[..(bytes.Length / 2)]);
        var e = Assert.ThrowsExactly<UserError>(() => new ExportedModel(shared, onnxAdapter: cut));
        StringAssert.Contains(e.Message, cut);
        StringAssert.Contains(e.Message, "truncated or corrupt");
    }

    [TestMethod]
    public void AnAdapterGivenToAMergedExportIsRefused()
    {
        var (_, file) = Exported();
        var cfg = ModelConfig.Load(Files.ParityModel);
        var (adapterDir, _) = TestLora.WriteAdapter(cfg, 4, 8, 3, "q_proj", "v_proj");
        var merged = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir()) { AdapterDir = adapterDir, MergeAttentionLora = true }).OutDir;
        var e = Assert.ThrowsExactly<UserError>(() => new ExportedModel(merged, onnxAdapter: file));
        StringAssert.Contains(e.Message, "is not an input");
        StringAssert.Contains(e.Message, "--onnx-adapter");
    }
}
