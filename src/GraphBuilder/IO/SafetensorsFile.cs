using System.IO.MemoryMappedFiles;
using System.Text.Json;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.IO;

/// <summary>
/// One safetensors file, memory-mapped read-only. The header (8-byte little-endian length, then
/// JSON <c>{name: {dtype, shape, data_offsets}, "__metadata__": {...}}</c>) is validated on open;
/// tensor bytes are read straight from the mapping, so copying into native buffers costs one copy.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _base;
    private readonly Dictionary<string, SafetensorsTensorInfo> _tensors;
    private bool _disposed;

    public string Path { get; }

    /// <summary>Tensor names in file order (by data offset).</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>The "__metadata__" string map (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The raw header JSON bytes (for fingerprints).</summary>
    public ReadOnlyMemory<byte> HeaderJson { get; }

    public long FileLength { get; }

    public SafetensorsFile(string path)
    {
        Path = path;
        if (!File.Exists(path)) throw Fail.User($"safetensors file not found: {path}", "check the path");
        FileLength = LinkedFile.Length(path);
        if (FileLength < 8)
            throw Fail.InFile(path, "header", $"file is {FileLength} bytes, shorter than the 8-byte header length",
                "the file is truncated; download or write it again");
        _map = MemoryMappedFile.CreateFromFile(LinkedFile.Resolve(path), FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        try
        {
            _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* p = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            _base = p + _view.PointerOffset;
            var (header, tensors, metadata) = ParseHeader();
            HeaderJson = header;
            _tensors = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
            Names = tensors.Select(t => t.Name).ToArray();
            Metadata = metadata;
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public bool Contains(string name) => _tensors.ContainsKey(name);

    public SafetensorsTensorInfo Info(string name) =>
        _tensors.TryGetValue(name, out var t)
            ? t
            : throw Fail.InFile(Path, $"tensor '{name}'", "no such tensor in this file", "check the tensor name and the checkpoint");

    /// <summary>The tensor's bytes inside the mapping (valid until Dispose).</summary>
    public ReadOnlySpan<byte> Bytes(string name)
    {
        var t = Info(name);
        if (t.ByteLength > int.MaxValue)
            throw Fail.User($"{Path}: tensor '{name}' is {t.ByteLength} bytes, too large for a span", "read it through Pointer(name)");
        return new ReadOnlySpan<byte>(Pointer(name), (int)t.ByteLength);
    }

    /// <summary>Address of the tensor's first byte inside the mapping (valid until Dispose).</summary>
    public byte* Pointer(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _base + Info(name).ByteOffset;
    }

    /// <summary>Copies the tensor's bytes to native memory of at least ByteLength bytes.</summary>
    public void CopyTo(string name, IntPtr destination, long destinationBytes)
    {
        var t = Info(name);
        if (destinationBytes < t.ByteLength) throw Fail.Arg(nameof(destinationBytes), destinationBytes, $">= {t.ByteLength}");
        Buffer.MemoryCopy(Pointer(name), (void*)destination, destinationBytes, t.ByteLength);
    }

    /// <summary>F32, F16, BF16 or F64 values converted to float.</summary>
    public float[] ReadFloat32(string name)
    {
        var t = Info(name);
        if (!t.DType.IsFloat())
            throw Fail.InFile(Path, $"tensor '{name}'", $"dtype {SafetensorsFormat.Name(t.DType)} is not floating point", "expected a float tensor here");
        return TensorConvert.ToFloat32(t.DType, Bytes(name));
    }

    public double[] ReadFloat64(string name)
    {
        var t = Info(name);
        if (!t.DType.IsFloat())
            throw Fail.InFile(Path, $"tensor '{name}'", $"dtype {SafetensorsFormat.Name(t.DType)} is not floating point", "expected a float tensor here");
        return TensorConvert.ToFloat64(t.DType, Bytes(name));
    }

    /// <summary>I64, I32, I8, U8 or BOOL values as long.</summary>
    public long[] ReadInt64(string name)
    {
        var t = Info(name);
        if (t.DType.IsFloat())
            throw Fail.InFile(Path, $"tensor '{name}'", $"dtype {SafetensorsFormat.Name(t.DType)} is not an integer type", "expected an integer tensor here");
        return TensorConvert.ToInt64(t.DType, Bytes(name));
    }

    /// <summary>A copy of the tensor as an IR TensorData record.</summary>
    public TensorData ReadTensor(string name)
    {
        var t = Info(name);
        return new TensorData(name, t.DType, [.. t.Shape], Bytes(name).ToArray());
    }

    private (byte[] header, List<SafetensorsTensorInfo> tensors, Dictionary<string, string> metadata) ParseHeader()
    {
        var n = (long)System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(_base, 8));
        if (n > SafetensorsFormat.MaxHeaderBytes || n < 2 || 8 + n > FileLength)
            throw Fail.InFile(Path, "header", $"header length {n} does not fit in the file of {FileLength} bytes",
                "the file is truncated or not a safetensors file");
        var header = new ReadOnlySpan<byte>(_base + 8, (int)n).ToArray();
        JsonElement root;
        try
        {
            using var doc = JsonDocument.Parse(header);
            root = doc.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw Fail.InFile(Path, "header", $"header is not valid JSON ({e.Message})", "the file is corrupt; write it again");
        }
        if (root.ValueKind != JsonValueKind.Object)
            throw Fail.InFile(Path, "header", "header JSON is not an object", "the file is corrupt; write it again");
        var dataStart = 8 + n;
        var tensors = new List<SafetensorsTensorInfo>();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var p in root.EnumerateObject())
        {
            if (p.Name == "__metadata__") ReadMetadata(p.Value, metadata);
            else tensors.Add(ParseEntry(p.Name, p.Value, dataStart));
        }
        var dup = tensors.GroupBy(t => t.Name).FirstOrDefault(g => g.Count() > 1);
        if (dup != null)
            throw Fail.InFile(Path, $"tensor '{dup.Key}'", "listed twice in the header", "the file is corrupt; write it again");
        tensors.Sort((a, b) => a.ByteOffset.CompareTo(b.ByteOffset));
        for (var i = 1; i < tensors.Count; i++)
        {
            var prev = tensors[i - 1];
            if (tensors[i].ByteOffset < prev.ByteOffset + prev.ByteLength)
                throw Fail.InFile(Path, $"tensor '{tensors[i].Name}'", $"data_offsets overlap tensor '{prev.Name}'",
                    "the file is corrupt; write it again");
        }
        return (header, tensors, metadata);
    }

    private void ReadMetadata(JsonElement v, Dictionary<string, string> metadata)
    {
        if (v.ValueKind != JsonValueKind.Object)
            throw Fail.InFile(Path, "__metadata__", "expected an object of strings", "the file is corrupt; write it again");
        foreach (var m in v.EnumerateObject())
        {
            if (m.Value.ValueKind != JsonValueKind.String)
                throw Fail.InFile(Path, $"__metadata__.{m.Name}", "metadata values must be strings", "the file is corrupt; write it again");
            metadata[m.Name] = m.Value.GetString()!;
        }
    }

    private SafetensorsTensorInfo ParseEntry(string name, JsonElement v, long dataStart)
    {
        UserError Bad(string what) => Fail.InFile(Path, $"tensor '{name}'", what, "the file is corrupt; write it again");
        if (v.ValueKind != JsonValueKind.Object) throw Bad("header entry is not an object");
        if (!v.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String) throw Bad("missing \"dtype\"");
        var dtype = SafetensorsFormat.TryParse(dt.GetString()!)
            ?? throw Fail.InFile(Path, $"tensor '{name}'", $"unsupported dtype '{dt.GetString()}'",
                "convert the checkpoint to F32, F16 or BF16 (also F64, I64, I32, I8, U8, BOOL)");
        var shape = Longs(v, "shape") ?? throw Bad("missing or invalid \"shape\"");
        if (shape.Any(d => d < 0)) throw Bad($"negative dimension in shape {Fail.Show(shape)}");
        var offs = Longs(v, "data_offsets");
        if (offs is not { Length: 2 }) throw Bad("\"data_offsets\" must be [begin, end]");
        var (begin, end) = (offs[0], offs[1]);
        if (begin < 0 || end < begin || dataStart + end > FileLength)
            throw Bad($"data_offsets [{begin}, {end}] lie outside the data area of {FileLength - dataStart} bytes");
        long numel;
        try { numel = shape.Aggregate(1L, (a, b) => checked(a * b)); }
        catch (OverflowException) { throw Bad($"shape {Fail.Show(shape)} overflows"); }
        var expected = numel * dtype.ByteSize();
        if (end - begin != expected)
            throw Bad($"data_offsets span {end - begin} bytes but shape {Fail.Show(shape)} of {SafetensorsFormat.Name(dtype)} needs {expected}");
        return new SafetensorsTensorInfo(name, dtype, shape, dataStart + begin, end - begin);
    }

    private static long[]? Longs(JsonElement v, string key)
    {
        if (!v.TryGetProperty(key, out var a) || a.ValueKind != JsonValueKind.Array) return null;
        var r = new List<long>();
        foreach (var e in a.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt64(out var x)) return null;
            r.Add(x);
        }
        return r.ToArray();
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_view != null)
        {
            if (_base != null) _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _map.Dispose();
    }

    public override string ToString() => $"{Path} ({Names.Count} tensors)";
}
