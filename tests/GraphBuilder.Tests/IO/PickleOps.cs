using System.Buffers.Binary;
using System.Text;

namespace MixLoRA.GraphBuilder.Tests.IO;

/// <summary>
/// An independent pickle disassembler for tests: opcode letters and arguments, with strings
/// from <c>names</c> replaced by a placeholder so two streams can be compared modulo tensor names.
/// </summary>
internal static class PickleOps
{
    public static List<string> Disassemble(byte[] p, ISet<string> names)
    {
        var r = new List<string>();
        var i = 0;
        while (i < p.Length)
        {
            var op = p[i++];
            string arg;
            switch (op)
            {
                case 0x80: case (byte)'K': case (byte)'q': case (byte)'h': arg = p[i].ToString(); i += 1; break;
                case (byte)'M': arg = BinaryPrimitives.ReadUInt16LittleEndian(p.AsSpan(i)).ToString(); i += 2; break;
                case (byte)'J': case (byte)'r': case (byte)'j': arg = BinaryPrimitives.ReadInt32LittleEndian(p.AsSpan(i)).ToString(); i += 4; break;
                case 0x8a: { int n = p[i]; arg = Convert.ToHexString(p, i + 1, n); i += 1 + n; break; }
                case (byte)'X':
                {
                    var n = (int)BinaryPrimitives.ReadUInt32LittleEndian(p.AsSpan(i));
                    var s = Encoding.UTF8.GetString(p, i + 4, n);
                    arg = names.Contains(s) ? "<name>" : s;
                    i += 4 + n;
                    break;
                }
                case (byte)'c':
                {
                    var a = Array.IndexOf(p, (byte)'\n', i);
                    var b = Array.IndexOf(p, (byte)'\n', a + 1);
                    arg = Encoding.ASCII.GetString(p, i, b - i);
                    i = b + 1;
                    break;
                }
                case (byte)'}': case (byte)'(': case (byte)'t': case 0x85: case 0x86: case 0x87: case (byte)'Q':
                case 0x89: case 0x88: case (byte)')': case (byte)'R': case (byte)'u': case (byte)'s': case (byte)'.':
                    arg = "";
                    break;
                default:
                    throw new InvalidDataException($"opcode 0x{op:x2} at {i - 1} not expected in a torch.save stream");
            }
            r.Add($"{(char)op}{arg}");
        }
        return r;
    }
}
