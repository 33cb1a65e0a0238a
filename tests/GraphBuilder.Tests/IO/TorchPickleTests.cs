using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Tests.Fixtures;

namespace MixLoRA.GraphBuilder.Tests.IO;

[TestClass]
public sealed class TorchPickleTests
{
    private static string RefBin => Repo.Parity("llama-basic", "adapter_init", "adapter_model.bin");
    private static string RefSafetensors => Repo.Parity("llama-basic", "adapter_init", "adapter_model.safetensors");

    private static void AssertSameTensors(IReadOnlyList<TensorData> a, IReadOnlyList<TensorData> b)
    {
        Assert.AreEqual(a.Count, b.Count);
        for (var i = 0; i < a.Count; i++)
        {
            Assert.AreEqual(a[i].Name, b[i].Name);
            Assert.AreEqual(a[i].DType, b[i].DType, a[i].Name);
            CollectionAssert.AreEqual(a[i].Dims.ToArray(), b[i].Dims.ToArray(), a[i].Name);
            Assert.IsTrue(a[i].Bytes.Span.SequenceEqual(b[i].Bytes.Span), a[i].Name);
        }
    }

    [TestMethod]
    public void ReferenceBinHoldsExactlyTheReferenceSafetensors()
    {
        var bin = TorchPickle.Read(RefBin);
        using var st = new SafetensorsFile(RefSafetensors);
        Assert.AreEqual(st.Names.Count, bin.Count);
        var fromSt = bin.Select(t => st.ReadTensor(t.Name)).ToList();
        AssertSameTensors(fromSt, bin);
        Assert.AreEqual("mixlora.layers.0.self_attn.q_proj.lora_A.weight", bin[0].Name);
    }

    [TestMethod]
    public void WritingTheReferenceTensorsReproducesTorchSaveByteForByte()
    {
        var bin = TorchPickle.Read(RefBin);
        var dir = Repo.TempDir("bin");
        var path = Path.Combine(dir, "adapter_model.bin");
        TorchPickle.Write(path, bin, TorchPickle.SerializationId(RefBin));
        CollectionAssert.AreEqual(File.ReadAllBytes(RefBin), File.ReadAllBytes(path));
        Directory.Delete(dir, true);
    }

    [TestMethod]
    public void PickleStructureMatchesTorchModuloNames()
    {
        var bin = TorchPickle.Read(RefBin);
        var renamed = bin.Select((t, i) => t with { Name = $"renamed.{i}.w" }).ToList();
        var dir = Repo.TempDir("bin");
        var path = Path.Combine(dir, "other_name.bin");
        TorchPickle.Write(path, renamed);
        var names = new HashSet<string>(bin.Select(t => t.Name).Concat(renamed.Select(t => t.Name)));
        var a = PickleOps.Disassemble(TorchPickle.PickleBytes(RefBin), names);
        var b = PickleOps.Disassemble(TorchPickle.PickleBytes(path), names);
        Assert.IsTrue(a.Count > 66 * 20);
        CollectionAssert.AreEqual(a, b);
        using var zip = ZipFile.OpenRead(path);
        Assert.IsTrue(zip.Entries.All(e => e.FullName.StartsWith("other_name/", StringComparison.Ordinal)));
        Assert.AreEqual(40, TorchPickle.SerializationId(path)!.Length);
        Directory.Delete(dir, true);
    }

    [TestMethod]
    public void RoundTripKeepsEveryDtypeShapeAndOrder()
    {
        var rnd = new Random(7);
        var big = Enumerable.Range(0, 70_000).Select(_ => (float)rnd.NextDouble()).ToArray();
        var tensors = new List<TensorData>
        {
            TensorData.FromFloats("z.big", big, 70_000),
            new("a.half", DType.Float16, [2, 3], TensorConvert.FromFloat32([1, 2, 3, 4, 5, 6], DType.Float16)),
            new("b.bf16", DType.BFloat16, [1, 2, 1, 2], TensorConvert.FromFloat32([1, -2, 3, -4], DType.BFloat16)),
            TensorData.FromLongs("c.long", [-1, 1L << 40], 2),
            TensorData.FromFloats("d.scalar", [3.5f]),
            TensorData.FromDoubles("e.double", [1e300, -2], 2),
            // bit patterns a value-level comparison would blur: -0, NaN payloads, infinities, subnormals
            new("f.bits", DType.Float32, [6], BitsOf([0x80000000u, 0x7FC00001u, 0xFFFFFFFFu, 0x7F800000u, 0xFF800000u, 0x00000001u])),
            new("g.odd", DType.Float16, [3], new byte[] { 0x01, 0x80, 0xFF, 0x7C, 0x00, 0x7E }),
            new("h.bool", DType.Bool, [3], new byte[] { 1, 0, 1 }),
        };
        var dir = Repo.TempDir("bin");
        foreach (var set in new[] { tensors, tensors.Take(1).ToList(), [] })
        {
            var path = Path.Combine(dir, "t.bin");
            TorchPickle.Write(path, set);
            AssertSameTensors(set, TorchPickle.Read(path));
        }
        Directory.Delete(dir, true);
    }

    private static byte[] BitsOf(uint[] bits) => System.Runtime.InteropServices.MemoryMarshal.AsBytes(bits.AsSpan()).ToArray();

    /// <summary>One zip record as the central directory and its local header describe it.</summary>
    private sealed record ZipRecord(string Name, int Method, long DataOffset, long Size, uint Crc);

    /// <summary>
    /// Reads a zip's layout by the format (APPNOTE): the end-of-central-directory record gives the central
    /// directory; each entry gives its local header's offset, where the 30-byte header, the name and the extra
    /// field precede the data.
    /// </summary>
    private static List<ZipRecord> ZipLayout(byte[] z)
    {
        var eocd = z.AsSpan().LastIndexOf(new byte[] { 0x50, 0x4B, 0x05, 0x06 });
        Assert.IsGreaterThanOrEqualTo(0, eocd, "end of central directory");
        var count = BinaryPrimitives.ReadUInt16LittleEndian(z.AsSpan(eocd + 10));
        var at = (int)BinaryPrimitives.ReadUInt32LittleEndian(z.AsSpan(eocd + 16));
        var records = new List<ZipRecord>();
        for (var i = 0; i < count; i++)
        {
            Assert.AreEqual(0x02014b50u, BinaryPrimitives.ReadUInt32LittleEndian(z.AsSpan(at)), $"central entry {i}");
            var method = BinaryPrimitives.ReadUInt16LittleEndian(z.AsSpan(at + 10));
            var crc = BinaryPrimitives.ReadUInt32LittleEndian(z.AsSpan(at + 16));
            var packed = BinaryPrimitives.ReadUInt32LittleEndian(z.AsSpan(at + 20));
            var size = BinaryPrimitives.ReadUInt32LittleEndian(z.AsSpan(at + 24));
            Assert.AreEqual(size, packed, "stored: packed size = size");
            var (n, e, c) = (BinaryPrimitives.ReadUInt16LittleEndian(z.AsSpan(at + 28)), BinaryPrimitives.ReadUInt16LittleEndian(z.AsSpan(at + 30)), BinaryPrimitives.ReadUInt16LittleEndian(z.AsSpan(at + 32)));
            var local = (int)BinaryPrimitives.ReadUInt32LittleEndian(z.AsSpan(at + 42));
            var name = Encoding.UTF8.GetString(z, at + 46, n);
            Assert.AreEqual(0x04034b50u, BinaryPrimitives.ReadUInt32LittleEndian(z.AsSpan(local)), $"local header of {name}");
            Assert.AreEqual(name, Encoding.UTF8.GetString(z, local + 30, BinaryPrimitives.ReadUInt16LittleEndian(z.AsSpan(local + 26))));
            var data = local + 30 + BinaryPrimitives.ReadUInt16LittleEndian(z.AsSpan(local + 26)) + BinaryPrimitives.ReadUInt16LittleEndian(z.AsSpan(local + 28));
            records.Add(new ZipRecord(name, method, data, size, crc));
            at += 46 + n + e + c;
        }
        return records;
    }

    /// <summary>CRC-32 (IEEE, reflected 0xEDB88320), bit by bit: the zip format's checksum.</summary>
    private static uint Crc(ReadOnlySpan<byte> data)
    {
        var c = 0xFFFFFFFFu;
        foreach (var b in data)
        {
            c ^= b;
            for (var k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
        }
        return ~c;
    }

    /// <summary>
    /// torch.save's layout (PyTorchStreamWriter): stored records whose data starts on a 64-byte boundary, the
    /// tensors' storages as `{archive}/data/{i}` in the order of the tensors, each record the tensor's raw
    /// little-endian bytes with a matching CRC. The reference file, written by torch, has the same layout, so the
    /// reading of the format is checked on both.
    /// </summary>
    [TestMethod]
    public void RecordsAreStoredAlignedAndHoldEachTensorsBytes()
    {
        void Check(byte[] file, string archive, IReadOnlyList<TensorData> tensors)
        {
            var records = ZipLayout(file);
            Assert.AreEqual($"{archive}/data.pkl", records[0].Name, "data.pkl comes first");
            foreach (var r in records)
            {
                Assert.AreEqual(0, r.Method, $"{r.Name} is stored, not deflated");
                Assert.AreEqual(r.Crc, Crc(file.AsSpan((int)r.DataOffset, (int)r.Size)), $"{r.Name} CRC");
            }
            var data = records.Where(r => r.Name.StartsWith($"{archive}/data/", StringComparison.Ordinal)).ToList();
            CollectionAssert.AreEqual(Enumerable.Range(0, tensors.Count).Select(i => $"{archive}/data/{i}").ToArray(), data.Select(r => r.Name).ToArray());
            for (var i = 0; i < tensors.Count; i++)
            {
                Assert.AreEqual(0, data[i].DataOffset % 64, $"{tensors[i].Name} record at {data[i].DataOffset}");
                CollectionAssert.AreEqual(tensors[i].Bytes.ToArray(), file.AsSpan((int)data[i].DataOffset, (int)data[i].Size).ToArray(), tensors[i].Name);
            }
        }

        using (var st = new SafetensorsFile(RefSafetensors))
        {
            var reference = TorchPickle.Read(RefBin).Select(t => st.ReadTensor(t.Name)).ToList();
            Check(File.ReadAllBytes(RefBin), "adapter_model", reference);
        }

        // odd sizes (6, 3 and 7 bytes), so an unpadded record would start off the boundary
        var tensors = new List<TensorData>
        {
            new("a", DType.Float16, [3], TensorConvert.FromFloat32([1, 2, 3], DType.Float16)),
            new("b", DType.Bool, [3], new byte[] { 1, 0, 1 }),
            TensorData.FromFloats("c", [0.5f, -0.25f, 8], 3),
            new("d", DType.UInt8, [7], new byte[] { 1, 2, 3, 4, 5, 6, 7 }),
            TensorData.FromLongs("e", [long.MinValue], 1),
        };
        var dir = Repo.TempDir("bin-layout");
        var path = Path.Combine(dir, "layout.bin");
        TorchPickle.Write(path, tensors);
        Check(File.ReadAllBytes(path), "layout", tensors);
        Directory.Delete(dir, true);
    }

    [TestMethod]
    public void NonContiguousAndForeignFilesAreUserErrors()
    {
        var dir = Repo.TempDir("bin-bad");
        var path = Path.Combine(dir, "t.bin");
        TorchPickle.Write(path, [TensorData.FromFloats("w", [1, 2, 3, 4, 5, 6], 2, 3)]);
        var pkl = TorchPickle.PickleBytes(path);
        // contiguous strides of [2, 3] are pickled as BININT1 3, BININT1 1, TUPLE2; make them (1, 2): a transpose
        var stride = new byte[] { (byte)'K', 3, (byte)'K', 1, 0x86 };
        var at = pkl.AsSpan().IndexOf(stride);
        Assert.IsTrue(at > 0 && at == pkl.AsSpan().LastIndexOf(stride), "one stride tuple (3, 1) in the pickle");
        pkl[at + 1] = 1;
        pkl[at + 3] = 2;
        var patched = Path.Combine(dir, "patched.bin");
        using (var src = ZipFile.OpenRead(path))
        using (var dst = ZipFile.Open(patched, ZipArchiveMode.Create))
            foreach (var e in src.Entries)
            {
                using var o = dst.CreateEntry(e.FullName, CompressionLevel.NoCompression).Open();
                if (e.FullName.EndsWith("data.pkl", StringComparison.Ordinal)) o.Write(pkl);
                else e.Open().CopyTo(o);
            }
        var err = Assert.ThrowsExactly<UserError>(() => TorchPickle.Read(patched));
        StringAssert.Contains(err.Message, "'w'");
        StringAssert.Contains(err.Message, "contiguous");
        var legacy = Path.Combine(dir, "legacy.bin");
        File.WriteAllBytes(legacy, Encoding.ASCII.GetBytes("\u0080\u0002not a zip at all"));
        StringAssert.Contains(Assert.ThrowsExactly<UserError>(() => TorchPickle.Read(legacy)).Message, legacy);
        Directory.Delete(dir, true);
    }
}
