using System.CommandLine;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.Inference.Export;

namespace MixLoRA.Cli;

/// <summary>
/// `mixlora-export --model DIR [--adapter DIR] --out DIR [--dtype float32|float16|bfloat16]
/// [--merge-attention-lora] [--onnx-adapter]`: writes an ORT-ready folder (see <see cref="Exporter"/>).
/// </summary>
public static class ExportCommand
{
    public static int Run(string[] args)
    {
        var model = new Option<string>("--model") { Description = "HF model folder (config.json, *.safetensors, tokenizer.json)", Required = true };
        var adapter = new Option<string?>("--adapter") { Description = "adapter folder (adapter_config.json + adapter_model.safetensors or .bin)" };
        var output = new Option<string>("--out") { Description = "output folder", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "weights and activations dtype", DefaultValueFactory = _ => "float32" };
        dtype.AcceptOnlyFromAmong("float32", "float16", "bfloat16");
        var merge = new Option<bool>("--merge-attention-lora") { Description = "fold the attention LoRA (q/k/v/o) into the base weights" };
        var onnxAdapter = new Option<bool>("--onnx-adapter") { Description = "keep adapter tensors overridable and also write adapter.onnx_adapter (ORT LoRA format)" };
        var routers = new Option<bool>("--router-outputs") { Description = "also output MixLoRA routing decisions (for mixlora-eval expert load)" };
        var command = new RootCommand("mixlora-export: the model (+ adapter) as an ONNX decoder with KV cache for ORT hosts")
        {
            model, adapter, output, dtype, merge, onnxAdapter, routers,
        };
        command.SetAction(p =>
        {
            var o = new ExportOptions(p.GetValue(model)!, p.GetValue(output)!)
            {
                AdapterDir = p.GetValue(adapter),
                DType = DTypes.Parse(p.GetValue(dtype)!),
                MergeAttentionLora = p.GetValue(merge),
                OnnxAdapter = p.GetValue(onnxAdapter),
                RouterOutputs = p.GetValue(routers),
            };
            var r = Exporter.Export(o);
            Console.WriteLine($"wrote {string.Join(", ", r.Files)} to {r.OutDir}");
            return 0;
        });
        return command.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }
}
