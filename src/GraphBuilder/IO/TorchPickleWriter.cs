using System.Buffers.Binary;
using System.Text;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.IO;

/// <summary>
/// Emits the <c>data.pkl</c> stream torch.save (pickle protocol 2) writes for a dict of name →
/// contiguous CPU tensor, opcode for opcode: the same memo numbering (BINPUT/BINGET), the same
/// integer opcodes, SETITEMS batches of 1000, and one storage per tensor keyed "0", "1", ...
/// </summary>
internal sealed class TorchPickleWriter
{
    private readonly MemoryStream _out = new();
    private readonly Dictionary<string, int> _memo = new(StringComparer.Ordinal);
    private int _next;

    public static string StorageType(DType t) => t switch
    {
        DType.Float32 => "FloatStorage",
        DType.Float16 => "HalfStorage",
        DType.BFloat16 => "BFloat16Storage",
        DType.Float64 => "DoubleStorage",
        DType.Int64 => "LongStorage",
        DType.Int32 => "IntStorage",
        DType.Int8 => "CharStorage",
        DType.UInt8 => "ByteStorage",
        DType.Bool => "BoolStorage",
        _ => throw Fail.Arg(nameof(t), t, "a dtype torch storages hold"),
    };

    /// <summary>The pickle bytes; storage i holds tensor i.</summary>
    public static byte[] Write(IReadOnlyList<TensorData> tensors)
    {
        var w = new TorchPickleWriter();
        w.Op(0x80, 2);               // PROTO 2
        w.Op((byte)'}');             // EMPTY_DICT
        w.Put();
        for (var start = 0; start < tensors.Count; start += 1000)
        {
            var batch = tensors.Skip(start).Take(1000).ToList();
            if (batch.Count > 1) w.Op((byte)'(');
            for (var i = 0; i < batch.Count; i++) w.Tensor(batch[i], start + i);
            w.Op(batch.Count > 1 ? (byte)'u' : (byte)'s');
        }
        w.Op((byte)'.');
        return w._out.ToArray();
    }

    private void Tensor(TensorData t, int storageKey)
    {
        Str(t.Name, memoKey: null);
        Global("torch._utils", "_rebuild_tensor_v2");
        Op((byte)'(');
        Op((byte)'(');                       // persistent id ('storage', type, key, 'cpu', numel)
        Str("storage", memoKey: "s:storage");
        Global("torch", StorageType(t.DType));
        Str(storageKey.ToString(System.Globalization.CultureInfo.InvariantCulture), memoKey: null);
        Str("cpu", memoKey: "s:cpu");
        Int(t.Count);
        Op((byte)'t');
        Put();
        Op((byte)'Q');                       // BINPERSID
        Int(0);                              // storage offset
        Tuple(t.Dims.ToArray());
        Tuple(Strides(t.Dims.ToArray()));
        Op(0x89);                            // requires_grad = False
        Global("collections", "OrderedDict");
        Op((byte)')');
        Op((byte)'R');
        Put();
        Op((byte)'t');
        Put();
        Op((byte)'R');
        Put();
    }

    internal static long[] Strides(long[] shape)
    {
        var s = new long[shape.Length];
        long acc = 1;
        for (var i = shape.Length - 1; i >= 0; i--)
        {
            s[i] = acc;
            acc *= shape[i];
        }
        return s;
    }

    private void Tuple(long[] items)
    {
        if (items.Length == 0)
        {
            Op((byte)')');
            return;
        }
        if (items.Length > 3) Op((byte)'(');
        foreach (var x in items) Int(x);
        Op(items.Length switch { 1 => 0x85, 2 => 0x86, 3 => 0x87, _ => (byte)'t' });
        Put();
    }

    private void Global(string module, string name)
    {
        if (Get($"g:{module}.{name}")) return;
        Op((byte)'c');
        Raw(Encoding.UTF8.GetBytes($"{module}\n{name}\n"));
        Put($"g:{module}.{name}");
    }

    private void Str(string s, string? memoKey)
    {
        if (memoKey != null && Get(memoKey)) return;
        var b = Encoding.UTF8.GetBytes(s);
        Op((byte)'X');
        U32((uint)b.Length);
        Raw(b);
        Put(memoKey);
    }

    private void Int(long v)
    {
        if (v is >= 0 and <= 0xff) Op((byte)'K', (byte)v);
        else if (v is >= 0 and <= 0xffff)
        {
            Op((byte)'M');
            Span<byte> b = stackalloc byte[2];
            BinaryPrimitives.WriteUInt16LittleEndian(b, (ushort)v);
            Raw(b);
        }
        else if (v is >= int.MinValue and <= int.MaxValue)
        {
            Op((byte)'J');
            U32((uint)(int)v);
        }
        else
        {
            var bytes = new System.Numerics.BigInteger(v).ToByteArray(); // minimal two's complement, little-endian
            Op(0x8a, (byte)bytes.Length);
            Raw(bytes);
        }
    }

    /// <summary>Memoizes the object just written (BINPUT, or LONG_BINPUT past 255).</summary>
    private void Put(string? key = null)
    {
        var i = _next++;
        if (key != null) _memo[key] = i;
        if (i < 256) Op((byte)'q', (byte)i);
        else
        {
            Op((byte)'r');
            U32((uint)i);
        }
    }

    private bool Get(string key)
    {
        if (!_memo.TryGetValue(key, out var i)) return false;
        if (i < 256) Op((byte)'h', (byte)i);
        else
        {
            Op((byte)'j');
            U32((uint)i);
        }
        return true;
    }

    private void Op(byte op) => _out.WriteByte(op);

    private void Op(byte op, byte arg)
    {
        _out.WriteByte(op);
        _out.WriteByte(arg);
    }

    private void U32(uint v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        Raw(b);
    }

    private void Raw(ReadOnlySpan<byte> b) => _out.Write(b);
}
