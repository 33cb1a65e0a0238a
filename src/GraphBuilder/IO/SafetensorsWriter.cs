using System.Text.Encodings.Web;
using System.Text.Json;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.IO;

/// <summary>
/// Writes safetensors files the way the HF <c>safetensors</c> library does: tensors laid out by
/// descending dtype size then name, "__metadata__" first in the header, the header padded with
/// spaces to a multiple of 8 bytes. The write is atomic (temp file in the same folder, then rename).
/// </summary>
public static class SafetensorsWriter
{
    public static void Write(string path, IEnumerable<(string Name, DType DType, long[] Shape, ReadOnlyMemory<byte> Data)> tensors,
        IReadOnlyDictionary<string, string>? metadata = null) =>
        Write(path, tensors.Select(t => new TensorData(t.Name, t.DType, [.. t.Shape], t.Data)), metadata);

    public static void Write(string path, IEnumerable<TensorData> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        Validate(list);
        var ordered = list.OrderByDescending(t => t.DType.ByteSize()).ThenBy(t => t.Name, StringComparer.Ordinal).ToList();
        var header = Header(ordered, metadata);
        AtomicFile.Write(path, s =>
        {
            Span<byte> len = stackalloc byte[8];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
            s.Write(len);
            s.Write(header);
            foreach (var t in ordered) s.Write(t.Bytes.Span);
        });
    }

    /// <summary>Float32 tensors (name, shape, values) stored as <paramref name="dtype"/>.</summary>
    public static void WriteFloats(string path, IEnumerable<(string Name, long[] Shape, float[] Values)> tensors,
        DType dtype = DType.Float32, IReadOnlyDictionary<string, string>? metadata = null) =>
        Write(path, tensors.Select(t => new TensorData(t.Name, dtype, [.. t.Shape], TensorConvert.FromFloat32(t.Values, dtype))), metadata);

    private static void Validate(List<TensorData> list)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in list)
        {
            if (t.Name == "__metadata__" || !seen.Add(t.Name))
                throw Fail.Arg("tensors", t.Name, "unique tensor names other than __metadata__");
            SafetensorsFormat.Name(t.DType);
            if (t.Count * t.DType.ByteSize() != t.Bytes.Length)
                throw Fail.Arg(t.Name, t.Bytes.Length, $"{t.Count * t.DType.ByteSize()} bytes for shape {Fail.Show(t.Dims)}");
        }
    }

    private static byte[] Header(List<TensorData> ordered, IReadOnlyDictionary<string, string>? metadata)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in ordered)
            {
                w.WriteStartObject(t.Name);
                w.WriteString("dtype", SafetensorsFormat.Name(t.DType));
                w.WriteStartArray("shape");
                foreach (var d in t.Dims) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + t.Bytes.Length);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += t.Bytes.Length;
            }
            w.WriteEndObject();
        }
        var json = ms.ToArray();
        var padded = (json.Length + 7) / 8 * 8;
        var r = new byte[padded];
        json.CopyTo(r, 0);
        r.AsSpan(json.Length).Fill((byte)' ');
        return r;
    }
}
