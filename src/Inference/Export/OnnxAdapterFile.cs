using System.Buffers.Binary;
using System.Collections.Immutable;
using System.Text;
using MixLoRA.GraphBuilder;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.Inference.Export;

/// <summary>The contents of an ORT LoRA adapter file: versions and named tensors.</summary>
public sealed record OnnxAdapter(int FormatVersion, int AdapterVersion, int ModelVersion, IReadOnlyList<TensorData> Parameters);

/// <summary>
/// ONNX Runtime's LoRA adapter file (<c>.onnx_adapter</c>, loaded by <c>OrtLoraAdapter</c>): a FlatBuffer of
/// onnxruntime/lora/adapter_format/adapter_schema.fbs, file identifier "TORT", format version 1:
/// <code>
/// table Parameter { name:string; dims:[int64]; data_type:TensorDataType(int32); raw_data:[uint8] (force_align: 8); }
/// table Adapter { format_version:int; adapter_version:int; model_version:int; parameters:[Parameter]; }
/// </code>
/// Written front to back (every offset points forward, as FlatBuffers requires), so parameters stream to disk.
/// </summary>
public static class OnnxAdapterFile
{
    public const string Identifier = "TORT";
    public const int FormatVersion = 1;
    private const int TableSize = 20;    // soffset + 4 fields of 4 bytes, for both tables
    private const int VtableSize = 12;   // vtable size, table size, 4 field offsets (u16 each)

    /// <summary>Writes the adapter file atomically; raw data is 8-byte aligned so ORT can use it in place.</summary>
    public static void Write(string path, IReadOnlyList<TensorData> parameters, int adapterVersion = 1, int modelVersion = 1) =>
        AtomicFile.Write(path, s => WriteTo(s, parameters, adapterVersion, modelVersion));

    public static void WriteTo(Stream stream, IReadOnlyList<TensorData> parameters, int adapterVersion = 1, int modelVersion = 1)
    {
        var plan = Plan(parameters);
        var w = new Writer(stream);
        w.U32(20);                                    // root offset → Adapter table at 20
        w.Bytes(Encoding.ASCII.GetBytes(Identifier));
        w.Vtable();                                   // at 8
        w.I32(20 - 8);                                // table at 20: soffset to its vtable
        w.I32(FormatVersion);
        w.I32(adapterVersion);
        w.I32(modelVersion);
        w.U32((uint)(40 - 36));                       // parameters vector at 40
        w.U32((uint)parameters.Count);
        for (var i = 0; i < parameters.Count; i++) w.U32((uint)(plan[i].Table - w.Position));
        for (var i = 0; i < parameters.Count; i++)
        {
            var (p, t) = (plan[i], parameters[i]);
            w.PadTo(p.Table - VtableSize);
            w.Vtable();
            w.I32(VtableSize);
            w.U32((uint)(p.Name - w.Position));
            w.U32((uint)(p.Dims - w.Position));
            w.I32((int)t.DType);
            w.U32((uint)(p.Raw - w.Position));
            w.PadTo(p.Name);
            var name = Encoding.UTF8.GetBytes(t.Name);
            w.U32((uint)name.Length);
            w.Bytes(name);
            w.Bytes([0]);
            w.PadTo(p.Dims);
            w.U32((uint)t.Dims.Length);
            foreach (var d in t.Dims) w.I64(d);
            w.PadTo(p.Raw);
            w.U32((uint)t.Bytes.Length);
            w.Bytes(t.Bytes.Span);
        }
    }

    private sealed record Layout(long Table, long Name, long Dims, long Raw);

    private static List<Layout> Plan(IReadOnlyList<TensorData> parameters)
    {
        long pos = 44 + (4L * parameters.Count);
        var plan = new List<Layout>();
        foreach (var t in parameters)
        {
            var table = Up(pos, 4) + VtableSize;
            var name = table + TableSize;
            var dims = Up8After4(name + 4 + Encoding.UTF8.GetByteCount(t.Name) + 1);
            var raw = Up8After4(dims + 4 + (8L * t.Dims.Length));
            plan.Add(new Layout(table, name, dims, raw));
            pos = raw + 4 + t.Bytes.Length;
        }
        if (pos > int.MaxValue) throw Fail.User($"the adapter file would be {pos} bytes", "ORT adapter files are FlatBuffers, limited to 2 GiB: export without --onnx-adapter");
        return plan;
    }

    private static long Up(long p, long a) => (p + a - 1) / a * a;

    // a vector's length field sits 4 bytes before its first element; elements 8-aligned
    private static long Up8After4(long p) => Up(p + 4, 8) - 4;

    private sealed class Writer(Stream s)
    {
        public long Position { get; private set; }
        private readonly byte[] _b = new byte[8];

        public void Bytes(ReadOnlySpan<byte> bytes) { s.Write(bytes); Position += bytes.Length; }
        public void U32(uint v) { BinaryPrimitives.WriteUInt32LittleEndian(_b, v); Bytes(_b.AsSpan(0, 4)); }
        public void I32(int v) { BinaryPrimitives.WriteInt32LittleEndian(_b, v); Bytes(_b.AsSpan(0, 4)); }
        public void I64(long v) { BinaryPrimitives.WriteInt64LittleEndian(_b, v); Bytes(_b.AsSpan(0, 8)); }

        public void PadTo(long target)
        {
            if (target < Position) throw Fail.Bug($"adapter layout: position {Position} is past {target}");
            Bytes(new byte[target - Position]);
        }

        // vtable: its size, the table's size, then the 4 fields at offsets 4, 8, 12, 16 of the table
        public void Vtable()
        {
            foreach (ushort v in new ushort[] { VtableSize, TableSize, 4, 8, 12, 16 })
            {
                BinaryPrimitives.WriteUInt16LittleEndian(_b, v);
                Bytes(_b.AsSpan(0, 2));
            }
        }
    }

    /// <summary>Reads an adapter file (any FlatBuffer layout of the schema, not only ours); a truncated or corrupt one is a <see cref="UserError"/>.</summary>
    public static OnnxAdapter Read(string path)
    {
        var buf = File.ReadAllBytes(path);
        try
        {
            return Parse(path, buf);
        }
        catch (Exception e) when (e is ArgumentOutOfRangeException or IndexOutOfRangeException or ArgumentException or OverflowException)
        {
            throw Fail.InFile(path, "FlatBuffer", $"an offset points outside the file's {buf.Length} bytes (truncated or corrupt)",
                "write it again with mixlora-export --onnx-adapter");
        }
    }

    private static OnnxAdapter Parse(string path, byte[] buf)
    {
        if (buf.Length < 8 || Encoding.ASCII.GetString(buf, 4, 4) != Identifier)
        {
            throw Fail.InFile(path, "header", $"file identifier is not \"{Identifier}\"", "pass an ORT LoRA adapter (.onnx_adapter) file");
        }
        var root = (int)U32(buf, 0);
        var parameters = new List<TensorData>();
        var vec = Field(buf, root, 3);
        if (vec > 0)
        {
            var n = (int)U32(buf, vec);
            for (var i = 0; i < n; i++)
            {
                var at = vec + 4 + (4 * i);
                parameters.Add(Parameter(buf, at + (int)U32(buf, at)));
            }
        }
        return new OnnxAdapter(Int(buf, root, 0), Int(buf, root, 1), Int(buf, root, 2), parameters);
    }

    private static TensorData Parameter(byte[] buf, int table)
    {
        var name = Field(buf, table, 0) is var np and > 0 ? Encoding.UTF8.GetString(buf, np + 4, (int)U32(buf, np)) : "";
        var dp = Field(buf, table, 1);
        var dims = dp > 0 ? Enumerable.Range(0, (int)U32(buf, dp)).Select(i => BinaryPrimitives.ReadInt64LittleEndian(buf.AsSpan(dp + 4 + (8 * i)))).ToImmutableArray() : [];
        var rp = Field(buf, table, 3);
        var raw = rp > 0 ? buf.AsSpan(rp + 4, (int)U32(buf, rp)).ToArray() : [];
        return new TensorData(name, (DType)Int(buf, table, 2), dims, raw);
    }

    private static uint U32(byte[] buf, int at) => BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(at));

    // position of field i's value inside the table, or 0 when absent
    private static int Slot(byte[] buf, int table, int field)
    {
        var vtable = table - BinaryPrimitives.ReadInt32LittleEndian(buf.AsSpan(table));
        var vsize = BinaryPrimitives.ReadUInt16LittleEndian(buf.AsSpan(vtable));
        var entry = 4 + (2 * field);
        if (entry >= vsize) return 0;
        var off = BinaryPrimitives.ReadUInt16LittleEndian(buf.AsSpan(vtable + entry));
        return off == 0 ? 0 : table + off;
    }

    private static int Int(byte[] buf, int table, int field) => Slot(buf, table, field) is var p and > 0 ? BinaryPrimitives.ReadInt32LittleEndian(buf.AsSpan(p)) : 0;

    // the target of an offset field, or 0 when absent
    private static int Field(byte[] buf, int table, int field) => Slot(buf, table, field) is var p and > 0 ? p + (int)U32(buf, p) : 0;
}
