using System.Text.Json;
using System.Text.Json.Serialization;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.Trainer.Training;

/// <summary>A tensor in the IO contract: name, dtype, shape.</summary>
public sealed record TensorSpec(string Name, string DType, long[] Shape);

/// <summary>One job of a multi-adapter artifacts folder: its name, initial adapter folder and trainable tensors (reference keys).</summary>
public sealed record JobManifest(string Name, string AdapterDir, IReadOnlyList<TensorSpec> Trainable);

/// <summary>One graph file of the artifacts folder and its IO contract.</summary>
public sealed record GraphSpec(string File, IReadOnlyList<TensorSpec> Inputs, IReadOnlyList<TensorSpec> Outputs);

/// <summary>
/// `manifest.json` of an artifacts folder: the model it was built for (path + fingerprint), the adapter
/// (config + initial weights in `adapter_init/`), static shapes, dtypes, and the graphs with their IO.
/// </summary>
public sealed record Manifest
{
    public const string FileName = "manifest.json";
    /// <summary>2: the training graphs take position_ids, record ids in attention_mask and token-share weights (packing).</summary>
    public const string CurrentFormat = "mixlora-artifacts/2";

    public string Format { get; init; } = CurrentFormat;
    public required string ModelPath { get; init; }
    public required string ModelFingerprint { get; init; }
    public required string ModelType { get; init; }
    public required int MicroBatchSize { get; init; }
    public required int SeqLen { get; init; }
    public required string WeightDType { get; init; }
    public required string ComputeDType { get; init; }
    public required string Device { get; init; }
    public required bool Accumulate { get; init; }

    /// <summary>Whether the graphs recompute each decoder layer in the backward (--gradient-checkpointing).</summary>
    public bool Checkpointing { get; init; }

    /// <summary>Whether the graphs use any (`fused_kernels` in the file, for readers; derived from <see cref="Fused"/>, ignored on load).</summary>
    [JsonPropertyName("fused_kernels")]
    public bool AnyFused => Fused != FusedOps.None;

    /// <summary>The com.mixlora fused ops the graphs use (they run only in this trainer's runtime); `fused_ops` in the file, by name (<see cref="FusedOpNames"/>).</summary>
    [JsonPropertyName("fused_ops")]
    [JsonConverter(typeof(FusedOpsJsonConverter))]
    public FusedOps Fused { get; init; }
    public string AdapterDir { get; init; } = "adapter_init";
    public required IReadOnlyDictionary<string, GraphSpec> Graphs { get; init; }
    public required IReadOnlyList<TensorSpec> Trainable { get; init; }
    public required IReadOnlyList<TensorSpec> Weights { get; init; }

    /// <summary>The jobs of a multi-adapter folder (`build-graph --jobs`), in row-block order; null for one adapter.
    /// <see cref="MicroBatchSize"/> is then rows per job.</summary>
    public IReadOnlyList<JobManifest>? Jobs { get; init; }

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public void Save(string dir) => AtomicFile.WriteAllText(Path.Combine(dir, FileName), JsonSerializer.Serialize(this, Json));

    public static Manifest Load(string dir)
    {
        var path = Path.Combine(dir, FileName);
        if (!Directory.Exists(dir)) throw Fail.User($"artifacts folder {dir} does not exist", "run bin/mixlora-build-graph --out DIR first");
        if (!File.Exists(path)) throw Fail.User($"{dir} has no {FileName}", "point --artifacts at a folder written by bin/mixlora-build-graph");
        Manifest? m;
        try
        {
            m = JsonSerializer.Deserialize<Manifest>(File.ReadAllText(path), Json);
        }
        catch (JsonException e)
        {
            throw Fail.InFile(path, $"line {e.LineNumber + 1}", "not a valid manifest", $"rebuild the artifacts ({e.Message})");
        }
        if (m is null || m.Format != CurrentFormat)
            throw Fail.InFile(path, "key 'format'", $"'{m?.Format}' is an older artifacts format (graphs without packing support); expected {CurrentFormat}",
                "rebuild the artifacts with this version's bin/mixlora-build-graph");
        return m;
    }
}
