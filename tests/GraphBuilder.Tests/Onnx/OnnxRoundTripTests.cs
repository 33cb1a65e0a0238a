using System.Collections.Immutable;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.GraphBuilder.Tests.Fixtures;
using P = MixLoRA.GraphBuilder.Onnx.Proto;

namespace MixLoRA.GraphBuilder.Tests.Onnx;

/// <summary>
/// OnnxWriter → OnnxReader gives back the same IR: nodes (names, ops, domains, inputs, outputs), attributes of
/// every kind the writer emits (int, float, string, ints, floats, tensor), inputs/outputs with static and
/// symbolic dims, every value's inferred dtype and shape, initializers of float32/float16/bfloat16/float64/
/// int64/bool bit for bit (inline and as external data), and the opset imports including custom domains.
/// Writing the read-back graph again gives the same bytes.
/// </summary>
[TestClass]
public sealed class OnnxRoundTripTests
{
    private static float[] Ramp(int n, float start, float step) => Enumerable.Range(0, n).Select(i => start + (i * step)).ToArray();

    /// <summary>A graph touching every attribute kind, several initializer dtypes, symbolic dims and two custom domains.</summary>
    private static Graph Sample()
    {
        var b = new Builder("roundtrip");
        b.UseOpset("com.microsoft", 1);
        var x = b.Input("x", DType.Float32, Shape.Of("batch", "seq", 8));
        var experts = b.Input("experts", DType.Int64, Shape.Of("tokens", 2));
        var anyShape = b.Input("opaque", DType.Float32, (Shape?)null);
        var partly = b.Input("partly", DType.Float32, Shape.Of(Dim.Unknown, 3));

        // 8 KiB of float32: over the external-data threshold
        var big = b.Initializer(TensorData.FromFloats("big.weight", Ramp(2048, -1, 1e-3f), 256, 8));
        var half = b.Initializer(new TensorData("half", DType.Float16, [8], TensorConvert.FromFloat32(Ramp(8, 0.5f, 0.25f), DType.Float16)));
        var bf16 = b.Initializer(new TensorData("bf16", DType.BFloat16, [2, 4], TensorConvert.FromFloat32(Ramp(8, -3, 0.75f), DType.BFloat16)));
        var f64 = b.Initializer(TensorData.FromDoubles("f64", [Math.PI, -Math.E, 1e-300], 3));
        var i64 = b.Initializer(TensorData.FromLongs("shape", [-1, 8], 2));
        var flags = b.Initializer(new TensorData("flags", DType.Bool, [8], new byte[] { 1, 0, 0, 1, 1, 1, 0, 1 }));

        var flat = b.Apply1(ShapeOps.ReshapeOp, [x, i64]);                                            // (?, 8)
        // "mixed" is only read by its output rename: Build folds it, so this Add node writes an output not named after it
        var mixed = b.Add(b.Cast(half, DType.Float32), b.Reshape(b.Cast(bf16, DType.Float32), 8));
        var gated = b.Where(flags, flat, b.Cast(half, DType.Float32));                                 // bool initializer
        var gemm = b.Gemm(gated, big, transB: true, alpha: 0.5f);                                     // int + float attributes
        var t = b.Transpose(b.Reshape(gemm, 2, -1, 8), 1, 0, 2);                                       // ints attribute
        var scattered = b.ScatterElements(b.ZerosLike(partly), b.Ints(0, 2, 1), b.Scale(b.Cast(b.Ints(1, 2, 3), DType.Float32), 2), 1, "add"); // string + tensor (Constant)
        var slot = b.Apply1(SlotLoraOps.SlotLoraOp, [x, b.Cast(bf16, DType.Float32), b.Cast(bf16, DType.Float32), experts],
            A.Of(("rank", 2L), ("scale", 1.5), ("note", "custom"), ("weights", new[] { 0.25f, -1.5f, 3e-8f }), ("dims", new long[] { 3, -1, long.MaxValue })));
        b.Output(t, "t");
        b.Output(scattered, "scattered");
        b.Output(slot, "slot");
        b.Output(b.Exp(anyShape), "opaque_exp");
        b.Output(b.Cast(f64, DType.Float32), "f64_as_f32");
        b.Output(mixed, "mixed");
        return b.Build();
    }

    [TestMethod]
    public void SampleCoversEveryAttributeKindTheWriterEmits()
    {
        var kinds = Sample().Nodes.SelectMany(n => n.Attrs.Values).Select(v => v.GetType()).ToHashSet();
        foreach (var t in new[] { typeof(long), typeof(float), typeof(string), typeof(ImmutableArray<long>), typeof(ImmutableArray<float>), typeof(TensorData) })
            Assert.Contains(t, kinds, t.Name);
        var g = Sample();
        Assert.IsTrue(g.Nodes.Any(n => n.Domain == FusedDomain.Name));
        CollectionAssert.IsSubsetOf(new[] { DType.Float32, DType.Float16, DType.BFloat16, DType.Float64, DType.Int64, DType.Bool }, g.Initializers.Select(i => i.DType).ToArray());
    }

    [TestMethod]
    public void InMemoryRoundTripKeepsTheIrAndRewritesTheSameBytes()
    {
        var g = Sample();
        var bytes = OnnxWriter.ToBytes(g);
        var back = OnnxReader.FromBytes(bytes);
        AssertSameIr(g, back);
        CollectionAssert.AreEqual(bytes, OnnxWriter.ToBytes(back), "a second write of the read-back graph is byte-identical");
    }

    [TestMethod]
    public void ExternalDataRoundTripKeepsTheIrAndTheDataFile()
    {
        var g = Sample();
        var dir = Repo.TempDir("onnx-rt");
        var path = Path.Combine(dir, "model.onnx");
        OnnxWriter.Save(g, path, new ExternalData("model.onnx.data", ThresholdBytes: 16), new Dictionary<string, string> { ["k"] = "v" });

        // the layout: tensors of 16+ bytes live in the data file at 4 KiB-aligned offsets, named relative to the model
        var proto = P.ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        var external = proto.Graph.Initializer.Where(t => t.DataLocation == P.TensorProto.Types.DataLocation.External).ToList();
        var expectExternal = g.Initializers.Where(t => t.Bytes.Length >= 16).Select(t => t.Name).ToArray();
        CollectionAssert.AreEquivalent(expectExternal, external.Select(t => t.Name).ToArray());
        Assert.IsTrue(proto.Graph.Initializer.Where(t => !expectExternal.Contains(t.Name)).All(t => t.RawData.Length > 0), "small tensors stay inline");
        var data = File.ReadAllBytes(Path.Combine(dir, "model.onnx.data"));
        foreach (var t in external)
        {
            var kv = t.ExternalData.ToDictionary(e => e.Key, e => e.Value);
            Assert.AreEqual("model.onnx.data", kv["location"]);
            var (offset, length) = (long.Parse(kv["offset"], System.Globalization.CultureInfo.InvariantCulture), int.Parse(kv["length"], System.Globalization.CultureInfo.InvariantCulture));
            Assert.AreEqual(0, offset % 4096, $"{t.Name} at {offset}");
            var original = g.Initializers.Single(i => i.Name == t.Name);
            CollectionAssert.AreEqual(original.Bytes.ToArray(), data.AsSpan((int)offset, length).ToArray(), t.Name);
        }
        Assert.AreEqual("v", proto.MetadataProps.Single(p => p.Key == "k").Value);
        Assert.AreEqual(OnnxWriter.IrVersion, proto.IrVersion);

        var back = OnnxReader.Load(path);
        AssertSameIr(g, back);

        var dir2 = Repo.TempDir("onnx-rt");
        var path2 = Path.Combine(dir2, "model.onnx");
        OnnxWriter.Save(back, path2, new ExternalData("model.onnx.data", ThresholdBytes: 16), new Dictionary<string, string> { ["k"] = "v" });
        CollectionAssert.AreEqual(File.ReadAllBytes(path), File.ReadAllBytes(path2), "model file rewritten byte for byte");
        CollectionAssert.AreEqual(data, File.ReadAllBytes(Path.Combine(dir2, "model.onnx.data")), "data file rewritten byte for byte");
        Directory.Delete(dir, true);
        Directory.Delete(dir2, true);
    }

    private static void AssertSameIr(Graph a, Graph b)
    {
        Assert.AreEqual(a.Name, b.Name);
        CollectionAssert.AreEqual(a.Opsets.ToArray(), b.Opsets.ToArray(), "opset imports");
        CollectionAssert.AreEqual(a.Inputs.ToArray(), b.Inputs.ToArray(), "inputs (name, dtype, shape incl. symbolic dims)");
        CollectionAssert.AreEqual(a.Outputs.ToArray(), b.Outputs.ToArray(), "outputs");
        Assert.HasCount(a.Nodes.Length, b.Nodes);
        for (var i = 0; i < a.Nodes.Length; i++)
        {
            var (x, y) = (a.Nodes[i], b.Nodes[i]);
            Assert.AreEqual((x.Name, x.OpType, x.Domain), (y.Name, y.OpType, y.Domain), $"node {i}");
            CollectionAssert.AreEqual(x.Inputs.ToArray(), y.Inputs.ToArray(), $"{x.Name} inputs");
            CollectionAssert.AreEqual(x.Outputs.ToArray(), y.Outputs.ToArray(), $"{x.Name} outputs");
            CollectionAssert.AreEqual(x.Attrs.Keys.ToArray(), y.Attrs.Keys.ToArray(), $"{x.Name} attribute names");
            foreach (var (k, v) in x.Attrs) AssertSameAttr(v, y.Attrs[k], $"{x.Name}.{k}");
        }
        Assert.HasCount(a.Initializers.Length, b.Initializers);
        foreach (var t in a.Initializers) AssertSameTensor(t, b.Initializers.Single(u => u.Name == t.Name), $"initializer {t.Name}");
        CollectionAssert.AreEquivalent(a.Values.Keys.ToArray(), b.Values.Keys.ToArray(), "value names");
        foreach (var (k, v) in a.Values) Assert.AreEqual(v, b.Values[k], $"value {k}: dtype and inferred shape");
    }

    private static void AssertSameAttr(object x, object y, string what)
    {
        Assert.AreEqual(x.GetType(), y.GetType(), what);
        switch (x)
        {
            case ImmutableArray<long> l: CollectionAssert.AreEqual(l.ToArray(), ((ImmutableArray<long>)y).ToArray(), what); break;
            case ImmutableArray<float> f: CollectionAssert.AreEqual(f.ToArray(), ((ImmutableArray<float>)y).ToArray(), what); break;
            case TensorData t: AssertSameTensor(t, (TensorData)y, what); break;
            default: Assert.AreEqual(x, y, what); break;
        }
    }

    private static void AssertSameTensor(TensorData x, TensorData y, string what)
    {
        Assert.AreEqual((x.Name, x.DType), (y.Name, y.DType), what);
        CollectionAssert.AreEqual(x.Dims.ToArray(), y.Dims.ToArray(), what);
        CollectionAssert.AreEqual(x.Bytes.ToArray(), y.Bytes.ToArray(), $"{what} bytes");
    }
}
