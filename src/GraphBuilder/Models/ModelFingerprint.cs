using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using MixLoRA.GraphBuilder.IO;

namespace MixLoRA.GraphBuilder.Models;

/// <summary>
/// Identifies a model folder cheaply: SHA-256 over config.json and, for each weight file, its name,
/// length and safetensors header (tensor names, dtypes, shapes, offsets). No weight bytes are read.
/// </summary>
public static class ModelFingerprint
{
    public static string Compute(string modelDir)
    {
        var config = Path.Combine(modelDir, "config.json");
        if (!File.Exists(config)) throw Fail.User($"no config.json in {modelDir}", "pass a HF model folder");
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Append(sha, "config.json");
        Append(sha, File.ReadAllBytes(config));
        foreach (var shard in SafetensorsModel.ShardPaths(modelDir))
        {
            Append(sha, Path.GetFileName(shard));
            Append(sha, BitConverter.GetBytes(IO.LinkedFile.Length(shard)));
            Append(sha, Header(shard));
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    private static byte[] Header(string path)
    {
        using var s = File.OpenRead(path);
        Span<byte> len = stackalloc byte[8];
        s.ReadExactly(len);
        var n = BinaryPrimitives.ReadUInt64LittleEndian(len);
        if (n > SafetensorsFormat.MaxHeaderBytes || 8 + (long)n > s.Length)
            throw Fail.InFile(path, "header", $"header length {n} does not fit in the file of {s.Length} bytes",
                "the file is truncated or not a safetensors file");
        var h = new byte[n];
        s.ReadExactly(h);
        return h;
    }

    private static void Append(IncrementalHash h, string s) => Append(h, Encoding.UTF8.GetBytes(s));

    private static void Append(IncrementalHash h, byte[] b)
    {
        h.AppendData(BitConverter.GetBytes((long)b.Length));
        h.AppendData(b);
    }
}
