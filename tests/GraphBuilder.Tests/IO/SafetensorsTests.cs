using System.Text;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Tests.Fixtures;

namespace MixLoRA.GraphBuilder.Tests.IO;

[TestClass]
public sealed class SafetensorsTests
{
    private static string Raw(string dir, string name, string headerJson, byte[] data, long? claimedLength = null)
    {
        var h = Encoding.UTF8.GetBytes(headerJson);
        var path = Path.Combine(dir, name);
        using var s = File.Create(path);
        s.Write(BitConverter.GetBytes((ulong)(claimedLength ?? h.Length)));
        s.Write(h);
        s.Write(data);
        return path;
    }

    private static string OpenError(string path)
    {
        var e = Assert.ThrowsExactly<UserError>(() => new SafetensorsFile(path).Dispose());
        StringAssert.Contains(e.Message, path);
        return e.Message;
    }

    [TestMethod]
    public void RewritingReferenceFilesReproducesThemByteForByte()
    {
        foreach (var (file, meta) in new[] { ("adapter_init/adapter_model.safetensors", false), ("model/model.safetensors", true) })
        {
            var src = Repo.Parity("llama-basic", file.Split('/'));
            using var f = new SafetensorsFile(src);
            Assert.AreEqual(meta, f.Metadata.Count > 0);
            var dir = Repo.TempDir("st");
            var dst = Path.Combine(dir, "out.safetensors");
            SafetensorsWriter.Write(dst, f.Names.Select(f.ReadTensor), f.Metadata);
            CollectionAssert.AreEqual(File.ReadAllBytes(src), File.ReadAllBytes(dst), file);
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void ReadsReferenceTensorInfoAndValues()
    {
        using var f = new SafetensorsFile(Repo.Parity("llama-basic", "model", "model.safetensors"));
        var info = f.Info("model.layers.0.self_attn.k_proj.weight");
        Assert.AreEqual(DType.Float32, info.DType);
        CollectionAssert.AreEqual(new long[] { 32, 64 }, info.Shape);
        Assert.AreEqual(32 * 64 * 4L, info.ByteLength);
        var values = f.ReadFloat32("model.layers.0.self_attn.k_proj.weight");
        var raw = f.Bytes("model.layers.0.self_attn.k_proj.weight");
        Assert.AreEqual(BitConverter.ToSingle(raw[(4 * 77)..]), values[77]);
        Assert.AreEqual("pt", f.Metadata["format"]);
        var e = Assert.ThrowsExactly<UserError>(() => f.Info("nope.weight"));
        StringAssert.Contains(e.Message, "nope.weight");
    }

    [TestMethod]
    public void HalfAndBFloat16ConvertToFloat()
    {
        var dir = Repo.TempDir("st");
        float[] exact = [1.5f, -2.25f, 0.0078125f, 49152f, 0f, -0f];
        var path = Path.Combine(dir, "h.safetensors");
        SafetensorsWriter.Write(path, new[]
        {
            new TensorData("h", DType.Float16, [2, 3], TensorConvert.FromFloat32(exact, DType.Float16)),
            new TensorData("b", DType.BFloat16, [6], TensorConvert.FromFloat32(exact, DType.BFloat16)),
            new TensorData("d", DType.Float64, [6], TensorConvert.FromFloat32(exact, DType.Float64)),
            TensorData.FromLongs("i", [3, -4, 5], 3),
        });
        using var f = new SafetensorsFile(path);
        CollectionAssert.AreEqual(exact, f.ReadFloat32("h"));
        CollectionAssert.AreEqual(exact, f.ReadFloat32("b"));
        CollectionAssert.AreEqual(exact.Select(x => (double)x).ToArray(), f.ReadFloat64("d"));
        CollectionAssert.AreEqual(new long[] { 3, -4, 5 }, f.ReadInt64("i"));
        // layout: 8-byte dtypes first, then by name
        CollectionAssert.AreEqual(new[] { "d", "i", "b", "h" }, f.Names.ToArray());
        Assert.AreEqual(0, (8 + f.HeaderJson.Length) % 8);
        Assert.ThrowsExactly<UserError>(() => f.ReadFloat32("i"));
    }

    [TestMethod]
    public void BFloat16RoundsToNearestEven()
    {
        // 1 + 2^-8 lies halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to the even mantissa (1).
        Assert.AreEqual(1f, TensorConvert.BFloat16ToFloat(TensorConvert.FloatToBFloat16(1f + MathF.Pow(2, -8))));
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): goes up.
        Assert.AreEqual(1f + MathF.Pow(2, -6), TensorConvert.BFloat16ToFloat(TensorConvert.FloatToBFloat16(1f + 3 * MathF.Pow(2, -8))));
        Assert.IsTrue(float.IsNaN(TensorConvert.BFloat16ToFloat(TensorConvert.FloatToBFloat16(float.NaN))));
    }

    [TestMethod]
    public void CorruptFilesFailNamingFileAndTensor()
    {
        var dir = Repo.TempDir("st-bad");
        var eight = new byte[8];
        StringAssert.Contains(OpenError(Raw(dir, "past.safetensors", "{}", [], claimedLength: 1_000)), "header length 1000");
        StringAssert.Contains(OpenError(Raw(dir, "huge.safetensors", "{}", [], claimedLength: long.MaxValue)), "does not fit");
        var tiny = Path.Combine(dir, "tiny.safetensors");
        File.WriteAllBytes(tiny, [1, 2, 3]);
        StringAssert.Contains(OpenError(tiny), "truncated");
        StringAssert.Contains(OpenError(Raw(dir, "json.safetensors", "{\"a\":{\"dtype\":", eight)), "not valid JSON");
        var overlap = OpenError(Raw(dir, "overlap.safetensors",
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}", eight));
        StringAssert.Contains(overlap, "overlap");
        StringAssert.Contains(overlap, "'b'");
        var size = OpenError(Raw(dir, "size.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", eight));
        StringAssert.Contains(size, "tensor 'w'");
        StringAssert.Contains(size, "needs 12");
        var outside = OpenError(Raw(dir, "outside.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", eight));
        StringAssert.Contains(outside, "outside the data area");
        var dtype = OpenError(Raw(dir, "dtype.safetensors", "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[8],\"data_offsets\":[0,8]}}", eight));
        StringAssert.Contains(dtype, "F8_E4M3");
        StringAssert.Contains(OpenError(Raw(dir, "shape.safetensors", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", eight)), "shape");
        Directory.Delete(dir, true);
    }

    [TestMethod]
    public void ModelFolderFindsTensorsAcrossShards()
    {
        var dir = Repo.TempDir("shards");
        SafetensorsWriter.WriteFloats(Path.Combine(dir, "model-00001-of-00002.safetensors"), [("a.weight", [2], [1f, 2f])]);
        SafetensorsWriter.WriteFloats(Path.Combine(dir, "model-00002-of-00002.safetensors"), [("b.weight", [1], [3f])], DType.BFloat16);
        File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"),
            "{\"metadata\":{},\"weight_map\":{\"a.weight\":\"model-00001-of-00002.safetensors\",\"b.weight\":\"model-00002-of-00002.safetensors\"}}");
        using (var m = new SafetensorsModel(dir))
        {
            CollectionAssert.AreEqual(new[] { 1f, 2f }, m.ReadFloat32("a.weight"));
            CollectionAssert.AreEqual(new[] { 3f }, m.ReadFloat32("b.weight"));
            Assert.AreEqual(DType.BFloat16, m.Info("b.weight").DType);
            var e = Assert.ThrowsExactly<UserError>(() => m.Info("c.weight"));
            StringAssert.Contains(e.Message, "c.weight");
            StringAssert.Contains(e.Message, dir);
        }
        File.Delete(Path.Combine(dir, "model-00002-of-00002.safetensors"));
        var missing = Assert.ThrowsExactly<UserError>(() => new SafetensorsModel(dir));
        StringAssert.Contains(missing.Message, "model-00002-of-00002.safetensors");
        File.Delete(Path.Combine(dir, "model.safetensors.index.json"));
        using (var m = new SafetensorsModel(dir)) CollectionAssert.AreEqual(new[] { "a.weight" }, m.Names.ToArray());
        File.Delete(Path.Combine(dir, "model-00001-of-00002.safetensors"));
        StringAssert.Contains(Assert.ThrowsExactly<UserError>(() => new SafetensorsModel(dir)).Message, "no *.safetensors");
        Directory.Delete(dir, true);
    }
}
