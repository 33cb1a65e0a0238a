using System.Text;

namespace MixLoRA.GraphBuilder.IO;

/// <summary>UTF-8 validation of text files before they are parsed: a bad byte is a one-line error naming the file and line.</summary>
public static class Utf8Text
{
    /// <summary>Throws a <see cref="UserError"/> naming <paramref name="path"/>, the line and the byte when <paramref name="bytes"/> is not UTF-8.</summary>
    public static void Check(string path, ReadOnlySpan<byte> bytes)
    {
        var at = 0;
        while (at < bytes.Length)
        {
            if (Rune.DecodeFromUtf8(bytes[at..], out _, out var used) != System.Buffers.OperationStatus.Done)
            {
                var line = bytes[..at].Count((byte)'\n') + 1;
                var column = at - (bytes[..at].LastIndexOf((byte)'\n') + 1) + 1;
                throw Fail.InFile(path, $"line {line}", $"byte 0x{bytes[at]:X2} at column {column} is not valid UTF-8",
                    "save the file as UTF-8 (iconv -f LATIN1 -t UTF-8, or your editor's encoding menu)");
            }
            at += used;
        }
    }
}
