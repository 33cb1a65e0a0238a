namespace MixLoRA.Text.Tokenization;

/// <summary>What the data pipeline and generation need from a tokenizer.</summary>
public interface ITokenizer
{
    /// <summary>Ids as HF `tokenizer.encode(text, add_special_tokens=addSpecialTokens)`.</summary>
    IReadOnlyList<int> Encode(string text, bool addSpecialTokens = true);

    /// <summary>Text as HF `tokenizer.decode(ids, skip_special_tokens=skipSpecialTokens)`.</summary>
    string Decode(IReadOnlyList<int> ids, bool skipSpecialTokens = false);

    int VocabSize { get; }
    int? BosId { get; }
    int? EosId { get; }
    int? PadId { get; }
}
