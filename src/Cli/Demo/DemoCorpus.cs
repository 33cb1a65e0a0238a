using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using MixLoRA.Text.Data;

namespace MixLoRA.Cli.Demo;

/// <summary>How the demo scores a task's held-out records (<see cref="DemoEval"/>).</summary>
public enum DemoTaskKind
{
    /// <summary>Greedy continuation, exact match of the answer line.</summary>
    ExactMatch,

    /// <summary>The answer label with the largest logit at the last prompt token (as mixlora-eval).</summary>
    Choice,
}

/// <summary>
/// One task file of the demo dataset: its `--data` task name, file name, training records and their texts,
/// and held-out records (written beside it as <see cref="HeldOutFileName"/>) that training never sees.
/// </summary>
public sealed record DemoTask(string Name, string Task, string FileName, IReadOnlyList<JsonObject> Records, IReadOnlyList<TextPair> Texts)
{
    public DemoTaskKind Kind { get; init; }
    public IReadOnlyList<JsonObject> HeldOut { get; init; } = [];
    public IReadOnlyList<TextPair> HeldOutTexts { get; init; } = [];
    public string HeldOutFileName => Path.GetFileNameWithoutExtension(FileName) + "-heldout" + Path.GetExtension(FileName);
}

/// <summary>
/// The built-in multi-task dataset of the demo, generated from a seed, each task split into training
/// records and held-out records whose inputs training never sees: adding a digit to a two-digit number
/// and copying three spaced letters (instruction layout, plain template), and ARC-layout questions
/// (question, choices{text,label}, answerKey, rendered with the reference's ARC prompt) whose answer
/// follows a rule: the one animal among an animal, a color, a number word and a fruit. Digits, newlines
/// and single letters after a space are single tokens in the demo tokenizer, so the rules are per token.
/// Sizes were picked so that the default 300-step CPU run learns every task (see DemoEval).
/// </summary>
public static class DemoCorpus
{
    private static readonly string[] Letters = ["a", "b", "c", "d", "e", "f", "g", "h"];

    /// <summary>Answers of the ARC-style task (the first row) and the words of the three distractor kinds.</summary>
    private static readonly string[][] Kinds =
    [
        ["cow", "cat", "dog", "bird", "fish", "horse"],
        ["red", "blue", "green", "white", "black", "pink"],
        ["one", "two", "three", "four", "five", "six"],
        ["apple", "pear", "plum", "grape", "lemon", "mango"],
    ];

    internal static readonly string[] Labels = ["A", "B", "C", "D"];

    /// <summary>The three task files; the same seed gives the same records.</summary>
    public static IReadOnlyList<DemoTask> Generate(int seed, int arithmetic = 160, int copy = 120, int arc = 240, int heldOut = 30)
    {
        var rng = new Random(seed);
        return [Arithmetic(rng, arithmetic, heldOut), Copy(rng, copy, heldOut), Arc(rng, arc, heldOut)];
    }

    /// <summary>
    /// A two-digit number plus a digit, with no carry: tens 1–9, ones and addend 0–4 (`23+4` → `27`). The
    /// answer's tens digit is copied and its ones digit comes from a 25-entry sum table; held-out records
    /// are numbers that training never saw (all table entries occur in training).
    /// </summary>
    private static DemoTask Arithmetic(Random rng, int n, int heldOut)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        JsonObject Fresh()
        {
            while (true)
            {
                int a = (rng.Next(1, 10) * 10) + rng.Next(5), b = rng.Next(5);
                if (seen.Add($"{a}+{b}")) return new() { ["instruction"] = "Add the numbers.", ["input"] = $"{a}+{b}", ["output"] = $"{a + b}" };
            }
        }
        var held = Enumerable.Range(0, heldOut).Select(_ => Fresh()).ToList();
        var records = Enumerable.Range(0, n).Select(_ => Fresh()).ToList();
        return Instruction("arithmetic", "arithmetic.jsonl", records, held);
    }

    private static DemoTask Copy(Random rng, int n, int heldOut)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        string Fresh()
        {
            while (true)
            {
                var s = string.Join(" ", Enumerable.Range(0, 3).Select(_ => Letters[rng.Next(Letters.Length)]));
                if (seen.Add(s)) return s;
            }
        }
        JsonObject Record(string s) => new() { ["instruction"] = "Repeat the letters.", ["input"] = s, ["output"] = s };
        var held = Enumerable.Range(0, heldOut).Select(_ => Record(Fresh())).ToList();
        var records = Enumerable.Range(0, n).Select(_ => Record(Fresh())).ToList();
        return Instruction("copy", "copy.jsonl", records, held);
    }

    private static DemoTask Instruction(string name, string file, List<JsonObject> records, List<JsonObject> heldOut) =>
        new(name, "plain", file, records, records.Select(InstructionText).ToList())
        {
            Kind = DemoTaskKind.ExactMatch, HeldOut = heldOut, HeldOutTexts = heldOut.Select(InstructionText).ToList(),
        };

    private static TextPair InstructionText(JsonObject r) => new(
        PromptTemplates.Instruction(InstructionTemplate.Plain, (string)r["instruction"]!, (string?)r["input"]),
        PromptTemplates.InstructionTarget((string?)r["output"]));

    private static DemoTask Arc(Random rng, int n, int heldOut)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        (JsonObject, TextPair) Fresh(int i)
        {
            while (true)
            {
                var choices = Kinds.Select(k => k[rng.Next(k.Length)]).OrderBy(_ => rng.Next()).ToArray();
                var answer = Kinds[0].Intersect(choices).Single();
                const string question = "Which of these is an animal?";
                if (!seen.Add(string.Join(",", choices))) continue;
                var key = Labels[Array.IndexOf(choices, answer)];
                var record = new JsonObject
                {
                    ["id"] = $"demo-{i:D3}",
                    ["question"] = question,
                    ["choices"] = new JsonObject
                    {
                        ["text"] = new JsonArray(choices.Select(c => (JsonNode)JsonValue.Create(c)).ToArray()),
                        ["label"] = new JsonArray(Labels.Select(l => (JsonNode)JsonValue.Create(l)).ToArray()),
                    },
                    ["answerKey"] = key,
                };
                return (record, new TextPair(PromptTemplates.MultipleChoice(question, Labels, choices), PromptTemplates.AnswerTarget(key)));
            }
        }
        var held = Enumerable.Range(0, heldOut).Select(i => Fresh(n + i)).ToList();
        var train = Enumerable.Range(0, n).Select(Fresh).ToList();
        return new DemoTask("arc", "arc-e", "arc.jsonl", train.Select(p => p.Item1).ToList(), train.Select(p => p.Item2).ToList())
        {
            Kind = DemoTaskKind.Choice, HeldOut = held.Select(p => p.Item1).ToList(), HeldOutTexts = held.Select(p => p.Item2).ToList(),
        };
    }

    /// <summary>
    /// Writes the task's training records as JSONL and its held-out records beside them (atomically) and
    /// returns the `TASK:PATH` argument for --data of the training file.
    /// </summary>
    public static string Write(DemoTask task, string dir)
    {
        var options = new JsonSerializerOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        void Save(string name, IEnumerable<JsonObject> records) =>
            GraphBuilder.IO.AtomicFile.WriteAllText(Path.Combine(dir, name), string.Join("\n", records.Select(r => r.ToJsonString(options))) + "\n");
        Save(task.FileName, task.Records);
        if (task.HeldOut.Count > 0) Save(task.HeldOutFileName, task.HeldOut);
        return $"{task.Task}:{Path.Combine(dir, task.FileName)}";
    }
}
