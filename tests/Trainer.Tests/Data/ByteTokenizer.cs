using System.Text;
using MixLoRA.Text.Tokenization;

namespace MixLoRA.Trainer.Tests.Data;

/// <summary>A deterministic stand-in tokenizer: id = UTF-8 byte + 3; 0 = pad, 1 = BOS (added by Encode), 2 = EOS.</summary>
internal sealed class ByteTokenizer : ITokenizer
{
    public const int Pad = 0, Bos = 1, Eos = 2, Offset = 3;

    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = true)
    {
        var ids = new List<int>();
        if (addSpecialTokens) ids.Add(Bos);
        ids.AddRange(Encoding.UTF8.GetBytes(text).Select(b => b + Offset));
        return ids;
    }

    public string Decode(IReadOnlyList<int> ids, bool skipSpecialTokens = false)
    {
        var sb = new StringBuilder();
        var bytes = new List<byte>();
        void Flush() { sb.Append(Encoding.UTF8.GetString(bytes.ToArray())); bytes.Clear(); }
        foreach (int id in ids)
        {
            if (id >= Offset) { bytes.Add((byte)(id - Offset)); continue; }
            Flush();
            if (!skipSpecialTokens) sb.Append(id switch { Pad => "<pad>", Bos => "<s>", _ => "</s>" });
        }
        Flush();
        return sb.ToString();
    }

    /// <summary>The ids of <paramref name="text"/> without BOS, computed independently of Encode.</summary>
    public static int[] Bytes(string text) => Encoding.UTF8.GetBytes(text).Select(b => b + Offset).ToArray();

    public int VocabSize => 256 + Offset;
    public int? BosId => Bos;
    public int? EosId => Eos;
    public int? PadId => Pad;
}

/// <summary>Temp folders for test data files, and the repository root.</summary>
internal static class TestFiles
{
    public static string TempDir()
    {
        return MixLoRA.Tests.TestRepo.NewTempDir("mixlora-data-tests");
    }

    public static string Write(string dir, string name, string content)
    {
        string path = Path.Combine(dir, name);
        File.WriteAllText(path, content);
        return path;
    }

    public static string RepoRoot() => MixLoRA.Tests.TestRepo.Root;

    public static string Samples => Path.Combine(RepoRoot(), "tests", "Trainer.Tests", "Data", "samples");

    /// <summary>The shared parity folder (…/shared/parity above the repository), or null where it is absent.</summary>
    public static string? Parity(string caseName) => MixLoRA.Tests.TestRepo.FindParity(caseName);
}
