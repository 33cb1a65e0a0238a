using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.Text.Tokenization;

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

    /// <summary>Also output each MixLoRA layer's routing (<c>router.{l}.experts</c>, <c>router.{l}.selected</c>), for evaluation.</summary>
    public bool RouterOutputs { get; init; }
}

/// <summary>
/// The written folder, the files in it, the graph's structure (initializers without their bytes: those were views
/// of the checkpoint, which is closed; the weights are in the written files) and the adapter tensors bound.
/// </summary>
public sealed record ExportResult(string OutDir, IReadOnlyList<string> Files, Graph Graph, IReadOnlyList<TensorData> AdapterTensors);

/// <summary>
/// Writes an exported model folder for ORT hosts (docs/design.md §8): model.onnx + model.onnx.data (weights as
/// external-data initializers, streamed from the memory-mapped checkpoint), genai_config.json, config.json,
/// the tokenizer files (plus a tokenizer_config.json derived from tokenizer.json when the model folder has
/// none: <see cref="TokenizerConfigFile"/>), and with an adapter its adapter_config.json (and, with
/// --onnx-adapter, adapter.onnx_adapter).
/// </summary>
public static class Exporter
{
    public const string ModelFile = "model.onnx";
    public const string DataFile = "model.onnx.data";
    public const string AdapterFile = "adapter.onnx_adapter";

    public const string TokenizerFile = "tokenizer.json";

    /// <summary>Files copied from the model folder when present.</summary>
    public static readonly string[] CopiedFiles =
        ["config.json", "generation_config.json", TokenizerFile, TokenizerConfigFile.FileName, "special_tokens_map.json", "tokenizer.model"];

    /// <summary>The graph-side adapter for an adapter config and the compute dtype (inference: no training switch, so no dropout).</summary>
    public static IAdapter CreateAdapter(AdapterConfig cfg, DType compute) => new AdapterGraph(cfg, compute, training: null);

    public static string RouterExperts(int layer) => $"router.{layer}.experts";
    public static string RouterSelected(int layer) => $"router.{layer}.selected";

    /// <summary>Exports; <paramref name="adapter"/>, when given, replaces <see cref="CreateAdapter"/>'s (tests pass their own).</summary>
    public static ExportResult Export(ExportOptions o, IAdapter? adapter = null)
    {
        Check(o);
        var cfg = ModelConfig.Load(o.ModelDir);
        using var model = new SafetensorsModel(o.ModelDir);
        AttentionMerge? merge = null;
        AdapterWeights? weights = null;
        string source = "";
        if (o.AdapterDir != null)
        {
            var adapterCfg = AdapterConfig.Load(o.AdapterDir);
            weights = AdapterWeights.Load(o.AdapterDir);
            source = Path.Combine(o.AdapterDir, File.Exists(Path.Combine(o.AdapterDir, AdapterWeights.SafetensorsName)) ? AdapterWeights.SafetensorsName : AdapterWeights.BinName);
            adapter ??= CreateAdapter(adapterCfg, o.DType);
            if (o.MergeAttentionLora)
            {
                // merging W + s·B·A would silently drop DoRA's per-row magnitude scaling
                Fail.If(adapterCfg.UseDora, $"--merge-attention-lora with a DoRA adapter ({o.AdapterDir} has \"use_dora\": true)",
                    "export without --merge-attention-lora; the graph then applies the DoRA magnitudes");
                Fail.If(adapterCfg.PeftType is "MOLA" or "HYDRALORA" && adapterCfg.TargetModules.Any(AttentionMerge.AttentionModules.Contains),
                    $"--merge-attention-lora with a {adapterCfg.PeftType} adapter ({o.AdapterDir}): its attention projections carry routed experts, which do not fold into one weight",
                    "export without --merge-attention-lora");
                merge = new AttentionMerge(weights, adapterCfg, source);
                adapter = new WithoutAttentionLora(adapter is AdapterGraph inner ? inner.ForModel(cfg.NumLayers) : adapter);
            }
        }
        Action<Builder>? routerOutputs = o.RouterOutputs && adapter is AdapterGraph ag ? b => AddRouterOutputs(b, ag) : null;
        var graph = ExportGraph.Build(cfg, new CheckpointWeights(model, o.DType, merge), o.DType, adapter, routerOutputs);
        IReadOnlyList<TensorData> bound = [];
        if (weights != null)
        {
            (graph, bound) = ExportGraph.BindAdapterTensors(graph, v => AdapterTensor(weights, source, v), o.OnnxAdapter);
        }
        return Write(o, cfg, graph, bound);
    }

    private static void AddRouterOutputs(Builder b, AdapterGraph adapter)
    {
        for (var l = 0; l < adapter.Routings.Count; l++)
        {
            b.Output(adapter.Routings[l].Experts, RouterExperts(l));
            b.Output(adapter.Routings[l].Selected, RouterSelected(l));
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

    /// <summary>The adapter tensor behind a graph input (same key), converted to the input's dtype.</summary>
    public static TensorData AdapterTensor(AdapterWeights weights, string source, Value v)
    {
        if (!weights.TryGetValue(v.Name, out var t))
        {
            throw Fail.InFile(source, $"tensor '{v.Name}'", "missing", "the adapter file does not match adapter_config.json or this model");
        }
        var want = v.S.ToLongs();
        if (!t.Shape.SequenceEqual(want))
        {
            throw Fail.InFile(source, $"tensor '{v.Name}'", $"shape [{string.Join(", ", t.Shape)}], the graph needs [{string.Join(", ", want)}]",
                "the adapter was trained for another model or config");
        }
        return new TensorData(v.Name, v.DType, [.. want], TensorConvert.FromFloat32(t.Data, v.DType));
    }

    /// <summary>The export folder appears only when complete: written beside it and renamed over it.</summary>
    private static ExportResult Write(ExportOptions o, ModelConfig cfg, Graph graph, IReadOnlyList<TensorData> bound) =>
        GraphBuilder.IO.AtomicFolder.Write(o.OutDir, "mixlora-export", tmp => WriteInto(o with { OutDir = tmp }, cfg, graph, bound)) with { OutDir = o.OutDir };

    private static ExportResult WriteInto(ExportOptions o, ModelConfig cfg, Graph graph, IReadOnlyList<TensorData> bound)
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
        // ONNX Runtime GenAI's tokenizer (onnxruntime-extensions) needs tokenizer_config.json beside tokenizer.json
        if (files.Contains(TokenizerFile) && !files.Contains(TokenizerConfigFile.FileName))
        {
            TokenizerConfigFile.Write(Path.Combine(o.OutDir, TokenizerConfigFile.FileName), Path.Combine(o.ModelDir, TokenizerFile), cfg);
            files.Add(TokenizerConfigFile.FileName);
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
        var structure = graph with { Initializers = [.. graph.Initializers.Select(t => t with { Bytes = ReadOnlyMemory<byte>.Empty })] };
        return new ExportResult(o.OutDir, files, structure, bound);
    }

    private static void Copy(string from, string to) => AtomicFile.Write(to, s =>
    {
        using var src = File.OpenRead(from);
        src.CopyTo(s);
    });
}
