using System.Collections.Immutable;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;
using P = MixLoRA.GraphBuilder.Onnx.Proto;

namespace MixLoRA.GraphBuilder.Onnx;

/// <summary>
/// ONNX file → Graph. Nodes are replayed through the builder so every value gets catalog-inferred types;
/// an op outside the catalog is an error naming it. External data is read relative to the model file.
/// </summary>
public static class OnnxReader
{
    public static Graph Load(string path)
    {
        if (!File.Exists(path)) throw Fail.User($"no ONNX model at {path}", "check the path");
        P.ModelProto m;
        try
        {
            using var f = File.OpenRead(path);
            m = P.ModelProto.Parser.ParseFrom(f);
        }
        catch (Google.Protobuf.InvalidProtocolBufferException e)
        {
            throw Fail.User($"{path} is not a valid ONNX model ({e.Message})", "re-export it");
        }
        return FromModel(m, Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    public static Graph FromBytes(byte[] bytes) => FromModel(P.ModelProto.Parser.ParseFrom(bytes), Directory.GetCurrentDirectory());

    private static Graph FromModel(P.ModelProto m, string dir)
    {
        var gp = m.Graph;
        var b = new Builder(gp.Name);
        foreach (var o in m.OpsetImport) b.UseOpset(o.Domain, (int)o.Version);
        var inits = gp.Initializer.Select(t => Tensor(t, dir)).ToDictionary(t => t.Name);
        foreach (var vi in gp.Input.Where(vi => !inits.ContainsKey(vi.Name))) b.Input(vi.Name, (DType)vi.Type.TensorType.ElemType, Shape(vi));
        foreach (var t in inits.Values) b.Initializer(t);
        foreach (var n in gp.Node)
        {
            var key = n.Domain.Length == 0 || n.Domain == "ai.onnx" ? n.OpType : $"{n.Domain}.{n.OpType}";
            var op = Catalog.Find(key) ?? throw Fail.User($"op {key} (node '{n.Name}') is not supported by this reader", "only graphs made of catalog ops can be read");
            var attrs = n.Attribute.Select(a => new KeyValuePair<string, object>(a.Name, Attr(a, dir)));
            var inputs = n.Input.Select(i => i.Length == 0 ? null : b.Get(i)).ToArray();
            var outs = b.Apply(op, inputs, attrs, n.Output[0], n.Output.Count);
            if (n.Name.Length > 0 && n.Name != n.Output[0]) b.NameLastNode(n.Name);
            for (var k = 1; k < n.Output.Count; k++)
            {
                if (outs[k].Name != n.Output[k]) throw Fail.User($"node '{n.Name}' output {k} is named '{n.Output[k]}'", "this reader expects the writer's naming (first output name + \":k\")");
            }
            if (op == ConstantOps.Constant) b.RecordConstant(n.Output[0], (TensorData)Attr(n.Attribute.First(a => a.Name == "value"), dir));
        }
        foreach (var o in gp.Output) b.Output(b.Get(o.Name));
        return b.Build();
    }

    private static Shape? Shape(P.ValueInfoProto vi)
    {
        var s = vi.Type.TensorType.Shape;
        if (s == null) return null;
        return new Shape(s.Dim.Select(d => d.ValueCase == P.TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? Dim.Of(d.DimValue)
            : d.ValueCase == P.TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam ? Dim.Sym(d.DimParam) : Dim.Unknown).ToImmutableArray());
    }

    private static object Attr(P.AttributeProto a, string dir) => a.Type switch
    {
        P.AttributeProto.Types.AttributeType.Int => a.I,
        P.AttributeProto.Types.AttributeType.Float => a.F,
        P.AttributeProto.Types.AttributeType.String => a.S.ToStringUtf8(),
        P.AttributeProto.Types.AttributeType.Ints => a.Ints.ToImmutableArray(),
        P.AttributeProto.Types.AttributeType.Floats => a.Floats.ToImmutableArray(),
        P.AttributeProto.Types.AttributeType.Tensor => Tensor(a.T, dir),
        _ => throw Fail.User($"attribute '{a.Name}' has type {a.Type}", "only int/float/string/ints/floats/tensor attributes are supported"),
    };

    private static TensorData Tensor(P.TensorProto t, string dir)
    {
        var dims = t.Dims.ToImmutableArray();
        var dtype = (DType)t.DataType;
        byte[] bytes;
        if (t.DataLocation == P.TensorProto.Types.DataLocation.External)
        {
            var kv = t.ExternalData.ToDictionary(e => e.Key, e => e.Value);
            var file = Path.Combine(dir, kv["location"]);
            var offset = kv.TryGetValue("offset", out var o) ? long.Parse(o, System.Globalization.CultureInfo.InvariantCulture) : 0;
            var length = long.Parse(kv["length"], System.Globalization.CultureInfo.InvariantCulture);
            using var f = File.OpenRead(file);
            f.Seek(offset, SeekOrigin.Begin);
            bytes = new byte[length];
            f.ReadExactly(bytes);
        }
        else if (!t.RawData.IsEmpty) bytes = t.RawData.ToByteArray();
        else if (t.FloatData.Count > 0) bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(t.FloatData.ToArray().AsSpan()).ToArray();
        else if (t.Int64Data.Count > 0) bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(t.Int64Data.ToArray().AsSpan()).ToArray();
        else if (t.DoubleData.Count > 0) bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(t.DoubleData.ToArray().AsSpan()).ToArray();
        else if (t.Int32Data.Count > 0) bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(t.Int32Data.ToArray().AsSpan()).ToArray();
        else bytes = [];
        return new TensorData(t.Name, dtype, dims, bytes);
    }
}
