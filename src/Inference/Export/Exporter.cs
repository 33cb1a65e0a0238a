using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Onnx;

namespace MixLoRA.Inference.Export;

/// <summary>What `mixlora-export` was asked to do.</summary>
public sealed record ExportOptions(string ModelDir, string OutDir)
{
    public string? AdapterDir { get; init; }
    public DType DType { get; init; } = DType.Float32;

    /// <summary>Fold the attention LoRA (q/k/v/o) into the base weights.</summary>
    public bool MergeAttentionLora { get; init; }

    /// <summary>Adapter tensors stay overridable graph inputs and are also written as <see cref="Exporter.AdapterFile"/>.</summary>
    public bool OnnxAdapter { get; init; }
}

/// <summary>The written folder, the files in it, and the graph (for tests and reports).</summary>
public sealed record ExportResult(string OutDir, IReadOnlyList<string> Files, Graph Graph, IReadOnlyList<TensorData> AdapterTensors);

/// <summary>
/// Writes an exported model folder for ORT hosts (DESIGN §8): model.onnx + model.onnx.data (weights as
/// external-data initializers, streamed from the memory-mapped checkpoint), genai_config.json, config.json,
/// the tokenizer files, and with an adapter its adapter_config.json (and, with --onnx-adapter, adapter.onnx_adapter).
/// </summary>
public static class Exporter
{
    public const string ModelFile = "model.onnx";
    public const string DataFile = "model.onnx.data";
    public const string AdapterFile = "adapter.onnx_adapter";
    public const string AdapterWeightsFile = "adapter_model.safetensors";

    /// <summary>Files copied from the model folder when present.</summary>
    public static readonly string[] CopiedFiles =
        ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"];

    /// <summary>Builds the graph-side adapter from its config (the integrator wires this to the MixLoRA adapter).</summary>
    public static Func<AdapterConfig, ModelConfig, IAdapter>? CreateAdapter { get; set; }

    /// <summary>Exports; <paramref name="adapter"/> overrides <see cref="CreateAdapter"/> (tests pass their own).</summary>
    public static ExportResult Export(ExportOptions o, IAdapter? adapter = null)
    {
        Check(o);
        var cfg = ModelConfig.Load(o.ModelDir);
        using var model = new SafetensorsModel(o.ModelDir);
        AdapterConfig? adapterCfg = null;
        SafetensorsFile? adapterFile = null;
        try
        {
            AttentionMerge? merge = null;
            if (o.AdapterDir != null)
            {
                adapterCfg = AdapterConfig.Load(o.AdapterDir);
                adapterFile = OpenAdapterWeights(o.AdapterDir);
                adapter ??= (CreateAdapter ?? throw Fail.Bug("Exporter.CreateAdapter is not wired to an adapter factory"))(adapterCfg, cfg);
                if (o.MergeAttentionLora)
                {
                    merge = new AttentionMerge(adapterFile, adapterCfg.Scaling, AttentionMerge.AttentionModules.Where(adapterCfg.Targets).ToArray());
                    adapter = new WithoutAttentionLora(adapter);
                }
            }
            var graph = ExportGraph.Build(cfg, new CheckpointWeights(model, o.DType, merge), o.DType, adapter);
            IReadOnlyList<TensorData> bound = [];
            if (adapterFile != null)
            {
                (graph, bound) = ExportGraph.BindAdapterTensors(graph, v => AdapterTensor(adapterFile, v), o.OnnxAdapter);
            }
            return Write(o, cfg, graph, bound);
        }
        finally
        {
            adapterFile?.Dispose();
        }
    }

    private static void Check(ExportOptions o)
    {
        if (!Directory.Exists(o.ModelDir)) throw Fail.User($"--model folder '{o.ModelDir}' does not exist", "pass a HF model folder (config.json + *.safetensors)");
        if (o.AdapterDir != null && !Directory.Exists(o.AdapterDir)) throw Fail.User($"--adapter folder '{o.AdapterDir}' does not exist", "pass an adapter folder (adapter_config.json + adapter_model.safetensors)");
        if (o.DType is not (DType.Float32 or DType.Float16 or DType.BFloat16)) throw Fail.User($"--dtype {o.DType.Name()} is not an export dtype", "use float32, float16 or bfloat16");
        if (o.AdapterDir == null && (o.MergeAttentionLora || o.OnnxAdapter))
        {
            throw Fail.User($"{(o.OnnxAdapter ? "--onnx-adapter" : "--merge-attention-lora")} needs an adapter", "pass --adapter DIR");
        }
        if (o.MergeAttentionLora && o.OnnxAdapter)
        {
            throw Fail.User("--merge-attention-lora bakes the attention LoRA into the base weights, so the graph could not serve other adapters through --onnx-adapter",
                "use one of the two flags");
        }
        if (Path.GetFullPath(o.OutDir) == Path.GetFullPath(o.ModelDir)) throw Fail.User("--out is the model folder", "write the export to another folder");
    }

    private static SafetensorsFile OpenAdapterWeights(string dir)
    {
        var path = Path.Combine(dir, AdapterWeightsFile);
        if (!File.Exists(path))
        {
            throw Fail.User($"{dir} has no {AdapterWeightsFile}", File.Exists(Path.Combine(dir, "adapter_model.bin"))
                ? "convert adapter_model.bin to safetensors first (the trainer writes safetensors)" : "pass the folder the trainer wrote");
        }
        return new SafetensorsFile(path);
    }

    /// <summary>
    /// The adapter tensor behind a graph input, converted to the input's dtype. Looked up by the input's name,
    /// then with ".weight" appended, then with "model." replaced by the reference prefix "mixlora.".
    /// </summary>
    public static TensorData AdapterTensor(SafetensorsFile file, Value v)
    {
        var candidates = new List<string> { v.Name, v.Name + ".weight" };
        if (v.Name.StartsWith("model.", StringComparison.Ordinal))
        {
            var reference = "mixlora." + v.Name["model.".Length..];
            candidates.AddRange([reference, reference + ".weight"]);
        }
        var key = candidates.FirstOrDefault(file.Contains)
            ?? throw Fail.InFile(file.Path, $"tensor '{v.Name}'", "missing", "the adapter file does not match adapter_config.json or this model");
        var info = file.Info(key);
        var want = v.S.ToLongs();
        if (!info.Shape.SequenceEqual(want))
        {
            throw Fail.InFile(file.Path, $"tensor '{key}'", $"shape [{string.Join(", ", info.Shape)}], the graph needs [{string.Join(", ", want)}]",
                "the adapter was trained for another model or config");
        }
        var bytes = info.DType == v.DType ? file.Bytes(key).ToArray() : TensorConvert.FromFloat32(file.ReadFloat32(key), v.DType);
        return new TensorData(v.Name, v.DType, [.. want], bytes);
    }

    private static ExportResult Write(ExportOptions o, ModelConfig cfg, Graph graph, IReadOnlyList<TensorData> bound)
    {
        Directory.CreateDirectory(o.OutDir);
        var files = new List<string> { ModelFile, DataFile };
        var meta = new Dictionary<string, string>
        {
            ["mixlora.dtype"] = o.DType.Name(),
            ["mixlora.adapter"] = o.AdapterDir == null ? "" : Path.GetFileName(Path.GetFullPath(o.AdapterDir)),
            ["mixlora.merged_attention_lora"] = o.MergeAttentionLora ? "true" : "false",
        };
        OnnxWriter.Save(graph, Path.Combine(o.OutDir, ModelFile), new ExternalData(DataFile), meta);
        AtomicFile.WriteAllText(Path.Combine(o.OutDir, GenAiConfig.FileName), GenAiConfig.ToJson(cfg, ModelFile));
        files.Add(GenAiConfig.FileName);
        foreach (var name in CopiedFiles.Where(n => File.Exists(Path.Combine(o.ModelDir, n))))
        {
            Copy(Path.Combine(o.ModelDir, name), Path.Combine(o.OutDir, name));
            files.Add(name);
        }
        if (o.AdapterDir != null)
        {
            Copy(Path.Combine(o.AdapterDir, AdapterConfig.FileName), Path.Combine(o.OutDir, AdapterConfig.FileName));
            files.Add(AdapterConfig.FileName);
        }
        if (o.OnnxAdapter)
        {
            OnnxAdapterFile.Write(Path.Combine(o.OutDir, AdapterFile), bound);
            files.Add(AdapterFile);
        }
        return new ExportResult(o.OutDir, files, graph, bound);
    }

    private static void Copy(string from, string to) => AtomicFile.Write(to, s =>
    {
        using var src = File.OpenRead(from);
        src.CopyTo(s);
    });
}
