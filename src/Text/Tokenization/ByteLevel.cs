using System.Text;

namespace MixLoRA.Text.Tokenization;

/// <summary>The GPT-2 byte-to-character table of byte-level BPE (LLaMA-3, Qwen, GPT-2).</summary>
internal static class ByteLevel
{
    /// <summary>The GPT-2 split regex used by ByteLevel when `use_regex` is true.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private static readonly char[] ByteToChar = BuildTable();
    private static readonly Dictionary<char, byte> CharToByte =
        Enumerable.Range(0, 256).ToDictionary(b => ByteToChar[b], b => (byte)b);

    private static char[] BuildTable()
    {
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            table[b] = printable ? (char)b : (char)next++;
        }
        return table;
    }

    /// <summary>Each UTF-8 byte of <paramref name="text"/> as its table character.</summary>
    public static string Encode(string text)
    {
        int max = Encoding.UTF8.GetMaxByteCount(text.Length);
        Span<byte> bytes = max <= 1024 ? stackalloc byte[max] : new byte[max];
        int n = Encoding.UTF8.GetBytes(text, bytes);
        return string.Create(n, bytes[..n].ToArray(), static (dst, src) =>
        {
            for (int i = 0; i < src.Length; i++) dst[i] = ByteToChar[src[i]];
        });
    }

    /// <summary>HF ByteLevel decoder: tokens whose characters are all in the table become bytes, others stay UTF-8; lossy UTF-8 decode.</summary>
    public static string Decode(IEnumerable<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var token in tokens)
        {
            bool all = true;
            foreach (char c in token)
                if (!CharToByte.ContainsKey(c)) { all = false; break; }
            if (all) foreach (char c in token) bytes.Add(CharToByte[c]);
            else bytes.AddRange(Encoding.UTF8.GetBytes(token));
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }
}
