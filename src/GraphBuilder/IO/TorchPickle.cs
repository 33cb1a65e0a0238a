using System.Globalization;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.IO;

/// <summary>
/// Reads and writes torch's zip-pickle format (<c>torch.save</c> of a dict name → tensor, e.g.
/// <c>adapter_model.bin</c>). Reading honours storage offsets and shapes (contiguous tensors only);
/// writing reproduces torch.save's archive layout byte for byte, so <c>torch.load</c> reads it.
/// </summary>
public static class TorchPickle
{
    private sealed record Storage(DType DType, string Key, long Numel);

    private sealed record TensorRef(Storage Storage, long Offset, long[] Shape, long[] Stride);

    /// <summary>The tensors of a torch.save'd dict, in the file's order.</summary>
    public static IReadOnlyList<TensorData> Read(string path)
    {
        if (!File.Exists(path)) throw Fail.User($"file not found: {path}", "check the path");
        ZipArchive zip;
        try { zip = ZipFile.OpenRead(path); }
        catch (InvalidDataException)
        {
            throw Fail.InFile(path, "archive", "not a zip archive (legacy torch format or not a torch file)",
                "re-save it with torch >= 1.6 (zip format) or convert it to safetensors");
        }
        using (zip)
        {
            var pkl = zip.Entries.FirstOrDefault(e => e.FullName == "data.pkl" || e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal))
                ?? throw Fail.InFile(path, "archive", "no data.pkl entry", "the file was not written by torch.save");
            var prefix = pkl.FullName[..^"data.pkl".Length];
            var root = new Unpickler(ReadEntry(pkl), path, (g, a) => Reduce(path, g, a), id => Persistent(path, id)).Load();
            if (root is not PickleDict dict) throw Fail.InFile(path, "data.pkl", "the pickled object is not a dict of tensors", "save a dict name → tensor (a state_dict)");
            var storages = new Dictionary<string, byte[]>(StringComparer.Ordinal);
            var result = new List<TensorData>();
            foreach (var (k, v) in dict)
            {
                var name = k as string ?? throw Fail.InFile(path, "data.pkl", $"dict key {Fail.Show(k)} is not a string", "save a dict name → tensor");
                var t = v as TensorRef ?? throw Fail.InFile(path, $"entry '{name}'", "value is not a tensor", "save a dict name → tensor");
                if (!storages.TryGetValue(t.Storage.Key, out var bytes))
                {
                    var e = zip.GetEntry($"{prefix}data/{t.Storage.Key}")
                        ?? throw Fail.InFile(path, $"tensor '{name}'", $"storage data/{t.Storage.Key} is missing", "the file is truncated or corrupt");
                    storages[t.Storage.Key] = bytes = ReadEntry(e);
                }
                result.Add(Slice(path, name, t, bytes));
            }
            return result;
        }
    }

    private static TensorData Slice(string path, string name, TensorRef t, byte[] storage)
    {
        var size = t.Storage.DType.ByteSize();
        if (storage.LongLength != t.Storage.Numel * size)
            throw Fail.InFile(path, $"tensor '{name}'", $"storage holds {storage.LongLength} bytes, expected {t.Storage.Numel * size}", "the file is corrupt");
        var expected = TorchPickleWriter.Strides(t.Shape);
        for (var i = 0; i < t.Shape.Length; i++)
            if (t.Shape[i] > 1 && t.Stride[i] != expected[i])
                throw Fail.InFile(path, $"tensor '{name}'", $"strides {Fail.Show(t.Stride)} are not contiguous for shape {Fail.Show(t.Shape)}",
                    "save tensor.contiguous() instead");
        var count = t.Shape.Aggregate(1L, (a, b) => a * b);
        if (t.Offset < 0 || t.Offset + count > t.Storage.Numel)
            throw Fail.InFile(path, $"tensor '{name}'", $"offset {t.Offset} + {count} elements pass the storage of {t.Storage.Numel}", "the file is corrupt");
        var bytes = storage.AsSpan(checked((int)(t.Offset * size)), checked((int)(count * size))).ToArray();
        return new TensorData(name, t.Storage.DType, [.. t.Shape], bytes);
    }

    private static object? Reduce(string path, PickleGlobal g, object?[] args)
    {
        switch ($"{g.Module}.{g.Name}")
        {
            case "collections.OrderedDict":
                return new PickleDict();
            case "torch._utils._rebuild_tensor_v2" when args.Length >= 4:
                return new TensorRef(
                    args[0] as Storage ?? throw Fail.InFile(path, "data.pkl", "tensor without storage", "the file is corrupt"),
                    Long(path, args[1]), Longs(path, args[2]), Longs(path, args[3]));
            case "torch._utils._rebuild_parameter" when args.Length >= 1:
                return args[0];
            default:
                throw Fail.InFile(path, "data.pkl", $"unsupported pickled call {g}", "save plain tensors in a dict (a state_dict)");
        }
    }

    private static object Persistent(string path, object? id)
    {
        if (id is not object?[] { Length: 5 } t || t[0] as string != "storage" || t[1] is not PickleGlobal type || t[2] is not string key)
            throw Fail.InFile(path, "data.pkl", $"unsupported persistent id {Fail.Show(id)}", "save plain CPU tensors with torch.save");
        var dtype = type.Name switch
        {
            "FloatStorage" => DType.Float32,
            "HalfStorage" => DType.Float16,
            "BFloat16Storage" => DType.BFloat16,
            "DoubleStorage" => DType.Float64,
            "LongStorage" => DType.Int64,
            "IntStorage" => DType.Int32,
            "CharStorage" => DType.Int8,
            "ByteStorage" => DType.UInt8,
            "BoolStorage" => DType.Bool,
            _ => throw Fail.InFile(path, "data.pkl", $"unsupported storage type {type}", "convert the tensors to float32, float16 or bfloat16"),
        };
        return new Storage(dtype, key, Long(path, t[4]));
    }

    private static long Long(string path, object? o) =>
        o as long? ?? throw Fail.InFile(path, "data.pkl", $"expected an integer, got {Fail.Show(o)}", "the file is corrupt");

    private static long[] Longs(string path, object? o) =>
        o is object?[] a ? a.Select(x => Long(path, x)).ToArray() : throw Fail.InFile(path, "data.pkl", "expected a tuple of integers", "the file is corrupt");

    private static byte[] ReadEntry(ZipArchiveEntry e)
    {
        using var s = e.Open();
        var b = new byte[e.Length];
        s.ReadExactly(b);
        return b;
    }

    /// <summary>
    /// Writes tensors as torch.save would (archive folder named after the file, one storage per
    /// tensor, 64-byte aligned records, a random serialization id unless one is given). Atomic.
    /// </summary>
    public static void Write(string path, IEnumerable<TensorData> tensors, string? serializationId = null)
    {
        var list = tensors.ToList();
        foreach (var t in list)
            if (t.Count * t.DType.ByteSize() != t.Bytes.Length)
                throw Fail.Arg(t.Name, t.Bytes.Length, $"{t.Count * t.DType.ByteSize()} bytes for shape {Fail.Show(t.Dims)}");
        if (list.Select(t => t.Name).Distinct(StringComparer.Ordinal).Count() != list.Count)
            throw Fail.Arg(nameof(tensors), list.Count, "unique tensor names");
        var archive = ArchiveName(path);
        serializationId ??= NewSerializationId();
        var pkl = TorchPickleWriter.Write(list);
        AtomicFile.Write(path, s =>
        {
            var z = new TorchZipWriter(s);
            z.Add($"{archive}/data.pkl", pkl);
            z.Add($"{archive}/.format_version", "1"u8);
            z.Add($"{archive}/.storage_alignment", "64"u8);
            z.Add($"{archive}/byteorder", "little"u8);
            for (var i = 0; i < list.Count; i++) z.Add($"{archive}/data/{i.ToString(CultureInfo.InvariantCulture)}", list[i].Bytes.Span);
            z.Add($"{archive}/version", "3\n"u8);
            z.Add($"{archive}/.data/serialization_id", Encoding.ASCII.GetBytes(serializationId));
            z.Finish();
        });
    }

    /// <summary>torch names the archive's top folder after the file name without its extension.</summary>
    internal static string ArchiveName(string path)
    {
        var name = Path.GetFileName(path);
        var dot = name.LastIndexOf('.');
        return dot > 0 ? name[..dot] : name;
    }

    private static string NewSerializationId()
    {
        Span<byte> b = stackalloc byte[16];
        RandomNumberGenerator.Fill(b);
        return $"{BitConverter.ToUInt64(b):D20}{BitConverter.ToUInt64(b[8..]):D20}";
    }

    /// <summary>The serialization id recorded in a torch zip archive (null when absent).</summary>
    public static string? SerializationId(string path)
    {
        using var zip = ZipFile.OpenRead(path);
        var e = zip.Entries.FirstOrDefault(x => x.FullName.EndsWith("/.data/serialization_id", StringComparison.Ordinal));
        return e is null ? null : Encoding.ASCII.GetString(ReadEntry(e));
    }

    /// <summary>The raw data.pkl stream of a torch zip archive (for structural comparisons).</summary>
    public static byte[] PickleBytes(string path)
    {
        using var zip = ZipFile.OpenRead(path);
        var e = zip.Entries.First(x => x.FullName == "data.pkl" || x.FullName.EndsWith("/data.pkl", StringComparison.Ordinal));
        return ReadEntry(e);
    }
}
