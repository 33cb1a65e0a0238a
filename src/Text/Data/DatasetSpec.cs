namespace MixLoRA.Text.Data;

/// <summary>
/// What to read and how to turn it into examples: the `--data` files (mixed in order; multi-task), the
/// instruction template, `--cutoff-len`, `--train-on-inputs`, and the graph's sequence length that every
/// example must fit.
/// </summary>
public sealed record DatasetSpec(IReadOnlyList<DataSource> Sources)
{
    /// <summary>Template of instruction files not named `alpaca:` or `plain:`.</summary>
    public InstructionTemplate Template { get; init; } = InstructionTemplate.Alpaca;

    /// <summary>Truncate every example to this many tokens (reference: `tokens[:cutoff_len]`).</summary>
    public int? CutoffLen { get; init; }

    /// <summary>Keep the loss on prompt tokens too (default false: prompt labels are −100).</summary>
    public bool TrainOnInputs { get; init; }

    /// <summary>
    /// Append EOS to text examples (as alpaca-lora's `add_eos_token`). The reference (m-LoRA / MoE-PEFT)
    /// does not: its text is encoded with the tokenizer's special tokens (BOS) only. Default false.
    /// </summary>
    public bool AppendEos { get; init; }

    /// <summary>The graph's sequence length; an example longer than this (after cutoff) is an error.</summary>
    public int? MaxSequenceLength { get; init; }

    /// <summary>A spec from `--data` arguments (`PATH` or `TASK:PATH`).</summary>
    public static DatasetSpec FromArgs(IEnumerable<string> dataArgs) => new(dataArgs.Select(DataSource.Parse).ToList());
}
