using System.Text;
using MixLoRA.Text.Tokenization;

namespace MixLoRA.Inference.Tests.Fixtures;

/// <summary>
/// A stand-in tokenizer that fits a vocabulary of V tokens (default 256, the parity model's; the family fixtures
/// have 128) and the parity model's 256-token context: one id per pair of UTF-8 bytes,
/// id = 3 + ((31·b₀ + b₁) mod (V − 3)); 1 = BOS (added by Encode), 2 = EOS. Decode is lossy (one character per
/// id), which is all the tests need.
/// </summary>
internal sealed class SmallTokenizer(int vocab = 256) : ITokenizer
{
    public const int Bos = 1, Eos = 2, Offset = 3;

    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = true)
    {
        var ids = new List<int>();
        if (addSpecialTokens) ids.Add(Bos);
        var bytes = Encoding.UTF8.GetBytes(text);
        for (var i = 0; i < bytes.Length; i += 2) ids.Add(Offset + (((31 * bytes[i]) + (i + 1 < bytes.Length ? bytes[i + 1] : 0)) % (vocab - Offset)));
        return ids;
    }

    public string Decode(IReadOnlyList<int> ids, bool skipSpecialTokens = false)
    {
        var sb = new StringBuilder();
        foreach (var id in ids)
        {
            if (id >= Offset) sb.Append((char)(id - Offset));
            else if (!skipSpecialTokens) sb.Append(id == Bos ? "<s>" : id == Eos ? "</s>" : "<pad>");
        }
        return sb.ToString();
    }

    public int VocabSize => vocab;
    public int? BosId => Bos;
    public int? EosId => Eos;
    public int? PadId => 0;
}
