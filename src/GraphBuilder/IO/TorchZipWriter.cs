using System.Buffers.Binary;
using System.Text;

namespace MixLoRA.GraphBuilder.IO;

/// <summary>
/// Writes a zip archive the way torch's PyTorchStreamWriter (miniz) does: stored entries, each
/// local header followed by an "FB" extra field of 'Z' padding so the data starts on a 64-byte
/// boundary, a data descriptor after the data, zero dates, and zip64 end records.
/// </summary>
internal sealed class TorchZipWriter
{
    public const int Alignment = 64;

    private readonly Stream _out;
    private readonly List<(byte[] Name, uint Crc, uint Size, long Offset)> _entries = [];
    private long _pos;

    public TorchZipWriter(Stream output) => _out = output;

    public void Add(string name, ReadOnlySpan<byte> data)
    {
        var nameBytes = Encoding.UTF8.GetBytes(name);
        if (_pos + data.Length + 4096 >= uint.MaxValue)
            throw Fail.User($"torch archive entry '{name}' would pass 4 GiB", "save large adapters as safetensors instead");
        var start = _pos + 30 + nameBytes.Length + 4;
        var padding = (int)((Alignment - start % Alignment) % Alignment);
        var crc = Crc32.Compute(data);
        Span<byte> h = stackalloc byte[30];
        BinaryPrimitives.WriteUInt32LittleEndian(h, 0x04034b50);
        BinaryPrimitives.WriteUInt16LittleEndian(h[4..], 0);       // version needed
        BinaryPrimitives.WriteUInt16LittleEndian(h[6..], 0x0808);  // data descriptor + UTF-8 names
        h[8..26].Clear();                                           // stored, no date, crc/sizes in descriptor
        BinaryPrimitives.WriteUInt16LittleEndian(h[26..], (ushort)nameBytes.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(h[28..], (ushort)(padding + 4));
        var offset = _pos;
        Write(h);
        Write(nameBytes);
        var extra = new byte[padding + 4];
        extra[0] = (byte)'F';
        extra[1] = (byte)'B';
        BinaryPrimitives.WriteUInt16LittleEndian(extra.AsSpan(2), (ushort)padding);
        extra.AsSpan(4).Fill((byte)'Z');
        Write(extra);
        Write(data);
        Span<byte> dd = stackalloc byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(dd, 0x08074b50);
        BinaryPrimitives.WriteUInt32LittleEndian(dd[4..], crc);
        BinaryPrimitives.WriteUInt32LittleEndian(dd[8..], (uint)data.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(dd[12..], (uint)data.Length);
        Write(dd);
        _entries.Add((nameBytes, crc, (uint)data.Length, offset));
    }

    public void Finish()
    {
        var cdStart = _pos;
        Span<byte> c = stackalloc byte[46];
        foreach (var (name, crc, size, offset) in _entries)
        {
            c.Clear();
            BinaryPrimitives.WriteUInt32LittleEndian(c, 0x02014b50);
            BinaryPrimitives.WriteUInt16LittleEndian(c[8..], 0x0808);
            BinaryPrimitives.WriteUInt32LittleEndian(c[16..], crc);
            BinaryPrimitives.WriteUInt32LittleEndian(c[20..], size);
            BinaryPrimitives.WriteUInt32LittleEndian(c[24..], size);
            BinaryPrimitives.WriteUInt16LittleEndian(c[28..], (ushort)name.Length);
            BinaryPrimitives.WriteUInt32LittleEndian(c[42..], (uint)offset);
            Write(c);
            Write(name);
        }
        var cdSize = _pos - cdStart;
        var zip64End = _pos;
        Span<byte> z = stackalloc byte[56];
        BinaryPrimitives.WriteUInt32LittleEndian(z, 0x06064b50);
        BinaryPrimitives.WriteUInt64LittleEndian(z[4..], 44);
        BinaryPrimitives.WriteUInt16LittleEndian(z[12..], 0x031E);  // made by: unix, 3.0
        BinaryPrimitives.WriteUInt16LittleEndian(z[14..], 45);      // needed: zip64
        BinaryPrimitives.WriteUInt64LittleEndian(z[16..], 0);       // this disk, cd disk
        BinaryPrimitives.WriteUInt64LittleEndian(z[24..], (ulong)_entries.Count);
        BinaryPrimitives.WriteUInt64LittleEndian(z[32..], (ulong)_entries.Count);
        BinaryPrimitives.WriteUInt64LittleEndian(z[40..], (ulong)cdSize);
        BinaryPrimitives.WriteUInt64LittleEndian(z[48..], (ulong)cdStart);
        Write(z);
        Span<byte> loc = stackalloc byte[20];
        BinaryPrimitives.WriteUInt32LittleEndian(loc, 0x07064b50);
        BinaryPrimitives.WriteUInt32LittleEndian(loc[4..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(loc[8..], (ulong)zip64End);
        BinaryPrimitives.WriteUInt32LittleEndian(loc[16..], 1);
        Write(loc);
        Span<byte> e = stackalloc byte[22];
        e.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(e, 0x06054b50);
        BinaryPrimitives.WriteUInt16LittleEndian(e[8..], (ushort)_entries.Count);
        BinaryPrimitives.WriteUInt16LittleEndian(e[10..], (ushort)_entries.Count);
        BinaryPrimitives.WriteUInt32LittleEndian(e[12..], (uint)cdSize);
        BinaryPrimitives.WriteUInt32LittleEndian(e[16..], (uint)cdStart);
        Write(e);
    }

    private void Write(ReadOnlySpan<byte> b)
    {
        _out.Write(b);
        _pos += b.Length;
    }
}

/// <summary>CRC-32 (IEEE 802.3, as zip uses).</summary>
internal static class Crc32
{
    private static readonly uint[] Table = Enumerable.Range(0, 256).Select(n =>
    {
        var c = (uint)n;
        for (var k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        return c;
    }).ToArray();

    public static uint Compute(ReadOnlySpan<byte> data)
    {
        var c = 0xFFFFFFFFu;
        foreach (var b in data) c = Table[(c ^ b) & 0xFF] ^ (c >> 8);
        return c ^ 0xFFFFFFFFu;
    }
}
