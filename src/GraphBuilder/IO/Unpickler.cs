using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace MixLoRA.GraphBuilder.IO;

/// <summary>A pickled global reference (module + name), as written by GLOBAL / STACK_GLOBAL.</summary>
public sealed record PickleGlobal(string Module, string Name)
{
    public override string ToString() => $"{Module}.{Name}";
}

/// <summary>A pickled dict (or collections.OrderedDict), in insertion order.</summary>
public sealed class PickleDict : List<KeyValuePair<object?, object?>>;

/// <summary>
/// A small pickle virtual machine for the opcodes torch.save emits (protocols 2–5, no arbitrary
/// classes): literals, tuples, lists, dicts, memo, GLOBAL/REDUCE/BUILD and persistent ids. What a
/// global call or a persistent id means is left to the caller's callbacks.
/// </summary>
public sealed class Unpickler
{
    private readonly byte[] _data;
    private readonly string _source;
    private readonly Func<PickleGlobal, object?[], object?> _reduce;
    private readonly Func<object?, object?> _persistentLoad;
    private readonly List<object?> _stack = [];
    private readonly Stack<int> _marks = new();
    private readonly Dictionary<long, object?> _memo = [];
    private int _pos;

    public Unpickler(byte[] data, string source, Func<PickleGlobal, object?[], object?> reduce, Func<object?, object?> persistentLoad)
    {
        _data = data;
        _source = source;
        _reduce = reduce;
        _persistentLoad = persistentLoad;
    }

    private UserError Bad(string what) =>
        Fail.InFile(_source, $"pickle byte {_pos}", what, "the file is corrupt or was not written by torch.save");

    public object? Load()
    {
        while (true)
        {
            if (_pos >= _data.Length) throw Bad("stream ends before STOP");
            var op = _data[_pos++];
            if (op == (byte)'.') return _stack.Count == 1 ? _stack[0] : throw Bad($"STOP with {_stack.Count} items on the stack");
            Step(op);
        }
    }

    private void Step(byte op)
    {
        switch (op)
        {
            case 0x80: Take(1); break;                                   // PROTO
            case 0x95: Take(8); break;                                   // FRAME
            case (byte)'(': _marks.Push(_stack.Count); break;            // MARK
            case (byte)'}': Push(new PickleDict()); break;               // EMPTY_DICT
            case (byte)']': Push(new List<object?>()); break;            // EMPTY_LIST
            case (byte)')': Push(Array.Empty<object?>()); break;         // EMPTY_TUPLE
            case (byte)'t': Push(PopMark()); break;                      // TUPLE
            case 0x85: Push(PopN(1)); break;                             // TUPLE1
            case 0x86: Push(PopN(2)); break;                             // TUPLE2
            case 0x87: Push(PopN(3)); break;                             // TUPLE3
            case (byte)'N': Push(null); break;                           // NONE
            case 0x88: Push(true); break;                                // NEWTRUE
            case 0x89: Push(false); break;                               // NEWFALSE
            case (byte)'K': Push((long)Take(1)[0]); break;               // BININT1
            case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(2))); break; // BININT2
            case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(Take(4))); break;  // BININT
            case 0x8a: Push(Long1(Take(Take(1)[0]))); break;             // LONG1
            case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(Take(8))); break; // BINFLOAT
            case (byte)'X': Push(Utf8(Take(checked((int)BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))))); break; // BINUNICODE
            case 0x8c: Push(Utf8(Take(Take(1)[0]))); break;              // SHORT_BINUNICODE
            case 0x8d: Push(Utf8(Take(checked((int)BinaryPrimitives.ReadUInt64LittleEndian(Take(8)))))); break; // BINUNICODE8
            case (byte)'U': Push(Encoding.Latin1.GetString(Take(Take(1)[0]))); break; // SHORT_BINSTRING
            case (byte)'T': Push(Encoding.Latin1.GetString(Take(BinaryPrimitives.ReadInt32LittleEndian(Take(4))))); break; // BINSTRING
            case (byte)'C': Push(Take(Take(1)[0]).ToArray()); break;     // SHORT_BINBYTES
            case (byte)'B': Push(Take(checked((int)BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))).ToArray()); break; // BINBYTES
            case (byte)'c': Push(new PickleGlobal(Line(), Line())); break; // GLOBAL
            case 0x93: { var name = Pop(); Push(new PickleGlobal(Str(Pop()), Str(name))); break; } // STACK_GLOBAL
            case (byte)'q': _memo[Take(1)[0]] = Top(); break;            // BINPUT
            case (byte)'r': _memo[BinaryPrimitives.ReadUInt32LittleEndian(Take(4))] = Top(); break; // LONG_BINPUT
            case 0x94: _memo[_memo.Count] = Top(); break;                // MEMOIZE
            case (byte)'h': Push(Memo(Take(1)[0])); break;               // BINGET
            case (byte)'j': Push(Memo(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))); break; // LONG_BINGET
            case (byte)'Q': Push(_persistentLoad(Pop())); break;         // BINPERSID
            case (byte)'R': Reduce(); break;                             // REDUCE
            case (byte)'s': { var v = Pop(); var k = Pop(); Dict(Top()).Add(new(k, v)); break; } // SETITEM
            case (byte)'u': SetItems(); break;                           // SETITEMS
            case (byte)'a': { var v = Pop(); List(Top()).Add(v); break; } // APPEND
            case (byte)'e': { var items = PopMark(); List(Top()).AddRange(items); break; } // APPENDS
            case (byte)'b': Build(); break;                              // BUILD
            default: throw Bad($"unsupported pickle opcode 0x{op:x2}");
        }
    }

    private void Reduce()
    {
        var args = Pop() as object?[] ?? throw Bad("REDUCE arguments are not a tuple");
        var fn = Pop() as PickleGlobal ?? throw Bad("REDUCE target is not a global");
        Push(_reduce(fn, args));
    }

    private void SetItems()
    {
        var items = PopMark();
        if (items.Length % 2 != 0) throw Bad("SETITEMS with an odd number of items");
        var d = Dict(Top());
        for (var i = 0; i < items.Length; i += 2) d.Add(new(items[i], items[i + 1]));
    }

    private void Build()
    {
        Pop(); // state: OrderedDict._metadata or tensor metadata; nothing we need
        if (Top() is null) throw Bad("BUILD on nothing");
    }

    private ReadOnlySpan<byte> Take(int n)
    {
        if (n < 0 || _pos + n > _data.Length) throw Bad("stream truncated");
        var s = _data.AsSpan(_pos, n);
        _pos += n;
        return s;
    }

    private string Line()
    {
        var end = Array.IndexOf(_data, (byte)'\n', _pos);
        if (end < 0) throw Bad("unterminated GLOBAL");
        var s = Encoding.UTF8.GetString(_data, _pos, end - _pos);
        _pos = end + 1;
        return s;
    }

    private static string Utf8(ReadOnlySpan<byte> b) => Encoding.UTF8.GetString(b);

    private static object Long1(ReadOnlySpan<byte> b)
    {
        var v = new BigInteger(b, isUnsigned: false, isBigEndian: false);
        return v >= long.MinValue && v <= long.MaxValue ? (long)v : v;
    }

    private void Push(object? o) => _stack.Add(o);

    private object? Top() => _stack.Count > 0 ? _stack[^1] : throw Bad("stack underflow");

    private object? Pop()
    {
        var o = Top();
        _stack.RemoveAt(_stack.Count - 1);
        return o;
    }

    private object?[] PopN(int n)
    {
        if (_stack.Count < n) throw Bad("stack underflow");
        var r = _stack.GetRange(_stack.Count - n, n).ToArray();
        _stack.RemoveRange(_stack.Count - n, n);
        return r;
    }

    private object?[] PopMark()
    {
        if (_marks.Count == 0) throw Bad("no MARK on the stack");
        return PopN(_stack.Count - _marks.Pop());
    }

    private object? Memo(long i) => _memo.TryGetValue(i, out var o) ? o : throw Bad($"memo slot {i} is empty");

    private string Str(object? o) => o as string ?? throw Bad("expected a string");

    private PickleDict Dict(object? o) => o as PickleDict ?? throw Bad("SETITEM(S) on something other than a dict");

    private List<object?> List(object? o) => o as List<object?> ?? throw Bad("APPEND(S) on something other than a list");
}
