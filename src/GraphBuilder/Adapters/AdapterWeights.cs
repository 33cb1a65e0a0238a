using System.Collections;
using System.Diagnostics.CodeAnalysis;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>Which weight files an adapter folder gets.</summary>
[Flags]
public enum AdapterWeightFormats
{
    Safetensors = 1,
    TorchBin = 2,
    Both = Safetensors | TorchBin,
}

/// <summary>
/// An adapter's tensors by reference key (e.g. <c>mixlora.layers.0.mlp.moe_gate.weight</c>), each
/// with its stored dtype, shape and values as float, in insertion order. Loads from an adapter
/// folder (<c>adapter_model.safetensors</c> preferred, else <c>adapter_model.bin</c>) and saves
/// either or both formats.
/// </summary>
public sealed class AdapterWeights : IReadOnlyDictionary<string, (DType DType, long[] Shape, float[] Data)>
{
    public const string SafetensorsName = "adapter_model.safetensors";
    public const string BinName = "adapter_model.bin";

    private readonly List<string> _order = [];
    private readonly Dictionary<string, (DType DType, long[] Shape, float[] Data)> _map = new(StringComparer.Ordinal);

    /// <summary>Adds or replaces a tensor (replacing keeps its position).</summary>
    public void Set(string name, long[] shape, float[] data, DType dtype = DType.Float32)
    {
        if (!dtype.IsFloat()) throw Fail.Arg(nameof(dtype), dtype, "a floating-point dtype");
        var count = shape.Aggregate(1L, (a, b) => a * b);
        if (count != data.Length) throw Fail.Arg(name, data.Length, $"{count} values for shape {Fail.Show(shape)}");
        if (!_map.ContainsKey(name)) _order.Add(name);
        _map[name] = (dtype, shape, data);
    }

    /// <summary>Loads the weights of an adapter folder, or one .safetensors / .bin file.</summary>
    public static AdapterWeights Load(string dirOrFile)
    {
        var path = dirOrFile;
        if (Directory.Exists(dirOrFile))
        {
            path = Path.Combine(dirOrFile, SafetensorsName);
            if (!File.Exists(path)) path = Path.Combine(dirOrFile, BinName);
            if (!File.Exists(path))
                throw Fail.User($"no {SafetensorsName} or {BinName} in {dirOrFile}", "pass an adapter folder written by training or by the reference tools");
        }
        var tensors = path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) ? ReadSafetensors(path) : TorchPickle.Read(path);
        var w = new AdapterWeights();
        foreach (var t in tensors)
        {
            if (!t.DType.IsFloat())
                throw Fail.InFile(path, $"tensor '{t.Name}'", $"dtype {t.DType.Name()} is not floating point", "adapter tensors must be float32, float16 or bfloat16");
            w.Set(t.Name, [.. t.Dims], TensorConvert.ToFloat32(t.DType, t.Bytes.Span), t.DType);
        }
        return w;
    }

    private static List<TensorData> ReadSafetensors(string path)
    {
        using var f = new SafetensorsFile(path);
        return f.Names.Select(f.ReadTensor).ToList();
    }

    /// <summary>The tensors as IR records in their stored dtype, in insertion order.</summary>
    public IEnumerable<TensorData> Tensors() =>
        _order.Select(n => new TensorData(n, _map[n].DType, [.. _map[n].Shape], TensorConvert.FromFloat32(_map[n].Data, _map[n].DType)));

    /// <summary>Writes adapter_model.safetensors and/or adapter_model.bin into <paramref name="dir"/> (atomic per file).</summary>
    public void Save(string dir, AdapterWeightFormats formats = AdapterWeightFormats.Safetensors)
    {
        Directory.CreateDirectory(dir);
        if (formats.HasFlag(AdapterWeightFormats.Safetensors)) SafetensorsWriter.Write(Path.Combine(dir, SafetensorsName), Tensors());
        if (formats.HasFlag(AdapterWeightFormats.TorchBin)) TorchPickle.Write(Path.Combine(dir, BinName), Tensors());
    }

    public (DType DType, long[] Shape, float[] Data) this[string key] =>
        _map.TryGetValue(key, out var v) ? v : throw Fail.User($"adapter tensor '{key}' is missing", "check that the adapter matches the config (layers, experts, targets)");

    public IEnumerable<string> Keys => _order;
    public IEnumerable<(DType DType, long[] Shape, float[] Data)> Values => _order.Select(n => _map[n]);
    public int Count => _order.Count;
    public bool ContainsKey(string key) => _map.ContainsKey(key);

    public bool TryGetValue(string key, [MaybeNullWhen(false)] out (DType DType, long[] Shape, float[] Data) value) =>
        _map.TryGetValue(key, out value);

    public IEnumerator<KeyValuePair<string, (DType DType, long[] Shape, float[] Data)>> GetEnumerator() =>
        _order.Select(n => new KeyValuePair<string, (DType, long[], float[])>(n, _map[n])).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}
