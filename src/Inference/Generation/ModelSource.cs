using MixLoRA.GraphBuilder;
using MixLoRA.Inference.Export;
using MixLoRA.Runtime;

namespace MixLoRA.Inference.Generation;

/// <summary>
/// Opens what `--model` (and `--adapter`) name: an exported folder (model.onnx; the adapter may then be an
/// .onnx_adapter file or a folder holding adapter.onnx_adapter), or a HF model folder (+ adapter folder), which
/// is exported in float32 to a temporary folder first (deleted on dispose).
/// </summary>
public sealed class ModelSource : IDisposable
{
    private readonly string? _temp;

    private ModelSource(ExportedModel model, string? temp)
    {
        Model = model;
        _temp = temp;
    }

    public ExportedModel Model { get; }

    public static ModelSource Open(string modelDir, string? adapter, OrtRuntime runtime, bool routerOutputs = false)
    {
        if (!Directory.Exists(modelDir)) throw Fail.User($"--model folder '{modelDir}' does not exist", "pass an exported folder or a HF model folder");
        if (File.Exists(Path.Combine(modelDir, Exporter.ModelFile)))
        {
            string? lora = null;
            if (adapter != null)
            {
                lora = File.Exists(adapter) ? adapter : Path.Combine(adapter, Exporter.AdapterFile);
                if (!File.Exists(lora))
                {
                    throw Fail.User($"--adapter '{adapter}' is not an ORT adapter file for the exported model in {modelDir}",
                        "pass the adapter.onnx_adapter of an --onnx-adapter export, or pass the HF model folder with the adapter folder");
                }
            }
            return new ModelSource(new ExportedModel(modelDir, runtime, lora), null);
        }
        var temp = Path.Combine(Path.GetTempPath(), "mixlora-export-" + Guid.NewGuid().ToString("N"));
        try
        {
            Exporter.Export(new ExportOptions(modelDir, temp) { AdapterDir = adapter, RouterOutputs = routerOutputs });
            return new ModelSource(new ExportedModel(temp, runtime), temp);
        }
        catch
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
            throw;
        }
    }

    public void Dispose()
    {
        Model.Dispose();
        if (_temp != null && Directory.Exists(_temp)) Directory.Delete(_temp, recursive: true);
    }
}
