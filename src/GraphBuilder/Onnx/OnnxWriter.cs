using System.Collections.Immutable;
using Google.Protobuf;
using MixLoRA.GraphBuilder.IR;
using P = MixLoRA.GraphBuilder.Onnx.Proto;

namespace MixLoRA.GraphBuilder.Onnx;

/// <summary>Where large initializers go: a data file beside the model (relative path), 4 KiB-aligned.</summary>
public sealed record ExternalData(string FileName, long ThresholdBytes = 1024);

/// <summary>Graph → ONNX ModelProto. With <see cref="ExternalData"/>, models over 2 GB can be written.</summary>
public static class OnnxWriter
{
    public const long IrVersion = 10;
    private const long Align = 4096;

    public static byte[] ToBytes(Graph g, IReadOnlyDictionary<string, string>? metadata = null) =>
        ToModel(g, metadata, null).ToByteArray();

    /// <summary>Writes model (and data file) atomically: temp files, then renames, data first.</summary>
    public static void Save(Graph g, string path, ExternalData? external = null, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        string? dataTmp = null;
        DataSink? sink = null;
        if (external != null)
        {
            dataTmp = Path.Combine(dir, external.FileName + ".tmp");
            sink = new DataSink(File.Create(dataTmp), external);
        }
        var tmp = path + ".tmp";
        try
        {
            var model = ToModel(g, metadata, sink);
            sink?.Stream.Dispose();
            using (var f = File.Create(tmp)) model.WriteTo(f);
            if (dataTmp != null) File.Move(dataTmp, Path.Combine(dir, external!.FileName), overwrite: true);
            File.Move(tmp, path, overwrite: true);
        }
        finally
        {
            sink?.Stream.Dispose();
            if (dataTmp != null && File.Exists(dataTmp)) File.Delete(dataTmp);
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    private sealed class DataSink(Stream stream, ExternalData spec)
    {
        public Stream Stream { get; } = stream;
        public ExternalData Spec { get; } = spec;
    }

    private static P.ModelProto ToModel(Graph g, IReadOnlyDictionary<string, string>? metadata, DataSink? sink)
    {
        var m = new P.ModelProto { IrVersion = IrVersion, ProducerName = "MixLoRA.NET", ProducerVersion = "0.1", Graph = ToGraph(g, sink) };
        foreach (var (domain, version) in g.Opsets) m.OpsetImport.Add(new P.OperatorSetIdProto { Domain = domain, Version = version });
        foreach (var (k, v) in metadata ?? new Dictionary<string, string>()) m.MetadataProps.Add(new P.StringStringEntryProto { Key = k, Value = v });
        return m;
    }

    private static P.GraphProto ToGraph(Graph g, DataSink? sink)
    {
        var gp = new P.GraphProto { Name = g.Name };
        gp.Input.AddRange(g.Inputs.Select(ValueInfo));
        gp.Output.AddRange(g.Outputs.Select(ValueInfo));
        gp.Initializer.AddRange(g.Initializers.Select(t => Tensor(t, sink)));
        gp.Node.AddRange(g.Nodes.Select(NodeProto));
        return gp;
    }

    private static P.ValueInfoProto ValueInfo(Value v)
    {
        var tt = new P.TypeProto.Types.Tensor { ElemType = (int)v.DType };
        if (v.Shape is { } s)
        {
            tt.Shape = new P.TensorShapeProto();
            foreach (var d in s.Dims)
            {
                var dim = new P.TensorShapeProto.Types.Dimension();
                if (d.IsStatic) dim.DimValue = d.Value;
                else if (d.Symbol != null) dim.DimParam = d.Symbol;
                tt.Shape.Dim.Add(dim);
            }
        }
        return new P.ValueInfoProto { Name = v.Name, Type = new P.TypeProto { TensorType = tt } };
    }

    private static P.NodeProto NodeProto(Node n)
    {
        var np = new P.NodeProto { Name = n.Name, OpType = n.OpType, Domain = n.Domain };
        np.Input.AddRange(n.Inputs);
        np.Output.AddRange(n.Outputs);
        foreach (var (k, v) in n.Attrs) np.Attribute.Add(Attribute(k, v));
        return np;
    }

    private static P.AttributeProto Attribute(string name, object v)
    {
        var a = new P.AttributeProto { Name = name };
        switch (v)
        {
            case long i: a.Type = P.AttributeProto.Types.AttributeType.Int; a.I = i; break;
            case float f: a.Type = P.AttributeProto.Types.AttributeType.Float; a.F = f; break;
            case string s: a.Type = P.AttributeProto.Types.AttributeType.String; a.S = ByteString.CopyFromUtf8(s); break;
            case ImmutableArray<long> ints: a.Type = P.AttributeProto.Types.AttributeType.Ints; a.Ints.AddRange(ints); break;
            case ImmutableArray<float> fs: a.Type = P.AttributeProto.Types.AttributeType.Floats; a.Floats.AddRange(fs); break;
            case TensorData t: a.Type = P.AttributeProto.Types.AttributeType.Tensor; a.T = Tensor(t, null); break;
            default: throw Fail.Bug($"attribute {name} has unsupported value {v.GetType().Name}");
        }
        return a;
    }

    private static P.TensorProto Tensor(TensorData t, DataSink? sink)
    {
        var tp = new P.TensorProto { Name = t.Name, DataType = (int)t.DType };
        tp.Dims.AddRange(t.Dims);
        if (sink == null || t.Bytes.Length < sink.Spec.ThresholdBytes)
        {
            tp.RawData = ByteString.CopyFrom(t.Bytes.Span);
            return tp;
        }
        var s = sink.Stream;
        var offset = (s.Position + Align - 1) / Align * Align;
        if (offset > s.Position) s.Write(new byte[offset - s.Position]);
        s.Write(t.Bytes.Span);
        tp.DataLocation = P.TensorProto.Types.DataLocation.External;
        tp.ExternalData.Add(new P.StringStringEntryProto { Key = "location", Value = sink.Spec.FileName });
        tp.ExternalData.Add(new P.StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        tp.ExternalData.Add(new P.StringStringEntryProto { Key = "length", Value = t.Bytes.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        return tp;
    }
}
