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

    [TestMethod]
    public void NonContiguousAndForeignFilesAreUserErrors()
    {
        var dir = Repo.TempDir("bin-bad");
        var path = Path.Combine(dir, "t.bin");
        TorchPickle.Write(path, [TensorData.FromFloats("w", [1, 2, 3, 4, 5, 6], 2, 3)]);
        var pkl = TorchPickle.PickleBytes(path);
        // contiguous strides of [2, 3] are pickled as BININT1 3, BININT1 1, TUPLE2; make them (1, 2): a transpose
        var at = pkl.AsSpan().IndexOf(new byte[] { (byte)'K', 3, (byte)'K', 1, 0x86 });
        Assert.IsTrue(at > 0);
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
