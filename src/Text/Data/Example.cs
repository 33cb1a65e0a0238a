namespace MixLoRA.Text.Data;

/// <summary>
/// One training example as the trainer sees it: token ids, labels (−100 where no loss is taken),
/// how many leading tokens are prompt, the task name and where it came from ("file: line 3").
/// </summary>
public sealed record Example(int[] InputIds, int[] Labels, int PromptLength, string Task, string Source)
{
    public const int IgnoreIndex = -100;

    public int Length => InputIds.Length;
}
