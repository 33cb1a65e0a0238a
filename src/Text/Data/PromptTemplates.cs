using MixLoRA.GraphBuilder;

namespace MixLoRA.Text.Data;

/// <summary>A text example: the prompt and the target the model learns to continue it with.</summary>
public sealed record TextPair(string Prompt, string Target);

/// <summary>
/// The prompt templates of the reference, character for character.
/// Instruction data: the Alpaca prompts of TUDB-Labs/MixLoRA `mixlora/prompter.py` (template "alpaca");
/// its `generate_prompt` omits the input section when the input is empty and appends `output + "\n"`
/// after the prompt when the output is non-empty; we follow that for both templates.
/// Commonsense tasks: TUDB-Labs/MoE-PEFT `moe_peft/tasks/qa_tasks.py` (same strings in m-LoRA
/// `mlora/tasks/qa_tasks.py`): the training text is prompt + " " + answer.
/// </summary>
public static class PromptTemplates
{
    const string AlpacaHeadWithInput =
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        + "Write a response that appropriately completes the request.\n\n### Instruction:\n";

    const string AlpacaHeadNoInput =
        "Below is an instruction that describes a task. "
        + "Write a response that appropriately completes the request.\n\n### Instruction:\n";

    /// <summary>The prompt of an instruction record (`input` null or empty means no input).</summary>
    public static string Instruction(InstructionTemplate template, string instruction, string? input) => template switch
    {
        InstructionTemplate.Alpaca => string.IsNullOrEmpty(input)
            ? AlpacaHeadNoInput + instruction + "\n\n### Response:\n"
            : AlpacaHeadWithInput + instruction + "\n\n### Input:\n" + input + "\n\n### Response:\n",
        InstructionTemplate.Plain => string.IsNullOrEmpty(input) ? instruction + "\n" : instruction + "\n" + input + "\n",
        _ => throw Fail.Arg(nameof(template), template, "alpaca or plain"),
    };

    /// <summary>The target of an instruction record: `output + "\n"`, or nothing for an empty output.</summary>
    public static string InstructionTarget(string? output) => string.IsNullOrEmpty(output) ? "" : output + "\n";

    /// <summary>ARC-e/ARC-c/OBQA: the question, then ` (label) text` per choice, then `\nAnswer:`.</summary>
    public static string MultipleChoice(string question, IReadOnlyList<string> labels, IReadOnlyList<string> texts)
    {
        var sb = new System.Text.StringBuilder("Please choose the correct answer to the question: ").Append(question);
        for (int i = 0; i < labels.Count; i++) sb.Append(" (").Append(labels[i]).Append(") ").Append(texts[i]);
        return sb.Append("\nAnswer:").ToString();
    }

    /// <summary>BoolQ (the passage is not part of the prompt).</summary>
    public static string BoolQ(string question) =>
        "Please answer the following question with true or false: " + question + "?\nAnswer:";

    /// <summary>PIQA.</summary>
    public static string Piqa(string goal, string sol1, string sol2) =>
        "Below is a common task along with two possible solutions labeled (A) and (B). "
        + "Please select the appropriate solution to achieve the task:\n" + goal + "\n"
        + "\n(A) " + sol1 + "\n(B) " + sol2 + "\n"
        + "\nCorrect solution:";

    /// <summary>The target of a commonsense record: a space, then the answer label.</summary>
    public static string AnswerTarget(string answer) => " " + answer;
}
