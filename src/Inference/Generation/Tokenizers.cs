using MixLoRA.Trainer.Tokenization;

namespace MixLoRA.Inference.Generation;

/// <summary>How the inference commands load a tokenizer from a model folder (tests substitute a fake).</summary>
public static class Tokenizers
{
    public static Func<string, ITokenizer> Load { get; set; } = HfTokenizer.FromDirectory;
}
