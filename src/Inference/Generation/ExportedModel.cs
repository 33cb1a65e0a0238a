using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.Runtime;

namespace MixLoRA.Inference.Generation;

/// <summary>The K/V cache of one sequence batch: the present outputs of the last step, fed back as the next past.</summary>
public sealed class KvCache : IDisposable
{
    internal KvCache(IReadOnlyList<OrtValue> values, IDisposable? owner, long length)
    {
        Values = values;
        _owner = owner;
        Length = length;
    }

    private readonly IDisposable? _owner;

    /// <summary>past_key_values.0.key, .0.value, .1.key, ... in layer order.</summary>
    internal IReadOnlyList<OrtValue> Values { get; }

    /// <summary>Tokens held (past_sequence_length).</summary>
    public long Length { get; }

    public void Dispose()
    {
        if (_owner != null) _owner.Dispose();
        else foreach (var v in Values) v.Dispose();
    }
}

/// <summary>Logits of one call (batch, sequence, vocab), the cache that now holds every token seen, and any other outputs (router decisions).</summary>
public sealed record StepOutput(float[] Logits, int Batch, int Sequence, int Vocab, KvCache Cache, IReadOnlyDictionary<string, HostTensor> Extra)
{
    /// <summary>The logits row of token <paramref name="t"/> of sequence <paramref name="row"/>.</summary>
    public ReadOnlySpan<float> Row(int row, int t) => Logits.AsSpan(((row * Sequence) + t) * Vocab, Vocab);
}

/// <summary>
/// An exported model folder (model.onnx + genai_config.json + config.json) in an ORT session: CPU by default,
/// CUDA through <see cref="OrtRuntime"/>. Optionally an ORT LoRA adapter file is active on every run.
/// </summary>
public sealed class ExportedModel : IDisposable
{
    private readonly InferenceSession _session;
    private readonly RunOptions _run = new();
    private readonly OrtLoraAdapter? _lora;
    private readonly TensorElementType _kvType;

    public ModelConfig Config { get; }
    public string Folder { get; }
    public IReadOnlyList<string> OutputNames => _session.OutputNames;

    /// <param name="runtime">where it runs (default: <see cref="OrtRuntime.Cpu"/>).</param>
    public ExportedModel(string folder, OrtRuntime? runtime = null, string? onnxAdapter = null)
    {
        var path = Path.Combine(folder, Export.Exporter.ModelFile);
        if (!File.Exists(path)) throw Fail.User($"{folder} has no {Export.Exporter.ModelFile}", "pass a folder written by mixlora-export");
        Folder = folder;
        Config = ModelConfig.Load(folder);
        runtime ??= OrtRuntime.Cpu;
        using var options = runtime.Options();
        try
        {
            _session = OrtRuntime.Create(() => new InferenceSession(path, options));
        }
        catch (OnnxRuntimeException e)
        {
            throw Fail.User($"ONNX Runtime could not load {path} on {runtime.Device}: {e.Message}", "re-export the model, or use --device cpu with a float32/float16 export");
        }
        _kvType = _session.InputMetadata[ExportGraph.PastKey(0)].ElementDataType;
        if (onnxAdapter != null)
        {
            if (!File.Exists(onnxAdapter)) throw Fail.User($"adapter file '{onnxAdapter}' does not exist", "pass an .onnx_adapter file written by mixlora-export --onnx-adapter");
            CheckAdapter(onnxAdapter, path);
            _lora = OrtLoraAdapter.Create(onnxAdapter, null);
            _run.AddActiveLoraAdapter(_lora);
        }
    }

    /// <summary>
    /// The adapter file parses, and each of its tensors is an input of this model with the same shape: a merged
    /// export (no adapter inputs) or another model's adapter is refused here instead of inside ORT.
    /// </summary>
    private void CheckAdapter(string file, string model)
    {
        var adapter = Export.OnnxAdapterFile.Read(file);
        Fail.If(adapter.Parameters.Count == 0, $"{file} holds no adapter tensors", "write it again with mixlora-export --onnx-adapter");
        foreach (var t in adapter.Parameters)
        {
            if (!_session.OverridableInitializerMetadata.TryGetValue(t.Name, out var meta) && !_session.InputMetadata.TryGetValue(t.Name, out meta))
            {
                throw Fail.User($"{file}: tensor '{t.Name}' is not an input of {model} (an export with merged or no adapter tensors)",
                    "pass the adapter.onnx_adapter of this export, made with mixlora-export --onnx-adapter");
            }
            var want = meta.Dimensions.Select(d => (long)d).ToArray();
            Fail.If(!want.SequenceEqual(t.Dims), $"{file}: tensor '{t.Name}' has shape [{string.Join(", ", t.Dims)}], {model} takes [{string.Join(", ", want)}]",
                "use the adapter exported with this model");
        }
    }

    /// <summary>An empty cache (past_sequence_length 0) for <paramref name="batch"/> sequences.</summary>
    public KvCache EmptyCache(int batch)
    {
        var shape = new long[] { batch, Config.NumKvHeads, 0, Config.HeadDim };
        var values = new List<OrtValue>();
        for (var i = 0; i < 2 * Config.NumLayers; i++) values.Add(OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, _kvType, shape));
        return new KvCache(values, null, 0);
    }

    /// <summary>
    /// One call: <paramref name="ids"/> and <paramref name="positions"/> (batch, sequence), <paramref name="mask"/>
    /// (batch, past + sequence). The past cache stays owned by the caller; the returned one is new.
    /// </summary>
    public StepOutput Forward(long[] ids, long[] positions, long[] mask, int batch, KvCache past)
    {
        var seq = ids.Length / batch;
        var total = mask.Length / batch;
        if (total != past.Length + seq) throw Fail.Bug($"attention mask has {total} columns, past {past.Length} + sequence {seq} expected");
        var names = new List<string> { ExportGraph.InputIds, ExportGraph.AttentionMask, ExportGraph.PositionIds };
        using var idsV = OrtValue.CreateTensorValueFromMemory(ids, [batch, seq]);
        using var maskV = OrtValue.CreateTensorValueFromMemory(mask, [batch, total]);
        using var posV = OrtValue.CreateTensorValueFromMemory(positions, [batch, seq]);
        var values = new List<OrtValue> { idsV, maskV, posV };
        for (var l = 0; l < Config.NumLayers; l++)
        {
            names.Add(ExportGraph.PastKey(l));
            names.Add(ExportGraph.PastValue(l));
        }
        values.AddRange(past.Values);
        var outNames = _session.OutputNames;
        var results = _session.Run(_run, names, values, outNames);
        var byName = outNames.Zip(results).ToDictionary(p => p.First, p => p.Second);
        var logits = byName[ExportGraph.Logits].GetTensorDataAsSpan<float>().ToArray();
        var present = new List<OrtValue>();
        for (var l = 0; l < Config.NumLayers; l++)
        {
            present.Add(byName[ExportGraph.PresentKey(l)]);
            present.Add(byName[ExportGraph.PresentValue(l)]);
        }
        var extra = byName.Where(p => p.Key != ExportGraph.Logits && !p.Key.StartsWith("present.", StringComparison.Ordinal))
            .ToDictionary(p => p.Key, p => HostTensor.From(p.Value));
        return new StepOutput(logits, batch, seq, logits.Length / (batch * seq), new KvCache(present, results, total), extra);
    }

    public void Dispose()
    {
        _session.Dispose();
        _run.Dispose();
        _lora?.Dispose();
    }
}
