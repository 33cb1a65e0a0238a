using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using MixLoRA.Text.Data;

namespace MixLoRA.Cli.Demo;

/// <summary>One task file of the demo dataset: its `--data` task name, file name and records.</summary>
public sealed record DemoTask(string Name, string Task, string FileName, IReadOnlyList<JsonObject> Records, IReadOnlyList<TextPair> Texts);

/// <summary>
/// The built-in multi-task dataset of the demo, generated from a seed: single-digit addition and word
/// copying (instruction layout, plain template) and a small commonsense set in the public ARC layout
/// (question, choices{text,label}, answerKey), rendered with the reference's ARC prompt.
/// </summary>
public static class DemoCorpus
{
    private static readonly string[] Words =
    [
        "apple", "river", "stone", "cloud", "green", "happy", "tiger", "bread", "music", "light",
        "chair", "ocean", "plant", "smile", "horse", "paper", "dream", "sugar", "train", "water",
    ];

    /// <summary>(question, correct answer, three wrong answers).</summary>
    private static readonly (string Q, string A, string[] Wrong)[] Facts =
    [
        ("Which animal says moo", "cow", ["cat", "bird", "fish"]),
        ("Which animal says meow", "cat", ["cow", "dog", "duck"]),
        ("Which animal barks", "dog", ["cow", "fish", "bee"]),
        ("Which animal can fly", "bird", ["dog", "cow", "fish"]),
        ("Which animal lives in water", "fish", ["cat", "horse", "bird"]),
        ("What is the opposite of hot", "cold", ["warm", "red", "big"]),
        ("What is the opposite of up", "down", ["left", "top", "fast"]),
        ("What is the opposite of big", "small", ["huge", "tall", "long"]),
        ("What is the opposite of day", "night", ["noon", "sun", "week"]),
        ("What color is the sky on a clear day", "blue", ["green", "red", "black"]),
        ("What color is grass", "green", ["blue", "white", "pink"]),
        ("What color is snow", "white", ["black", "green", "red"]),
        ("What do plants need to grow", "sunlight", ["sand", "plastic", "metal"]),
        ("What do we use to see", "eyes", ["ears", "hands", "feet"]),
        ("What do we use to hear", "ears", ["eyes", "nose", "knees"]),
        ("What gives us light during the day", "the sun", ["the moon", "a rock", "a tree"]),
        ("What is frozen water called", "ice", ["steam", "sand", "oil"]),
        ("How many legs does a spider have", "eight", ["two", "four", "six"]),
        ("How many days are in a week", "seven", ["five", "ten", "three"]),
        ("What falls from clouds when it rains", "water", ["sand", "milk", "salt"]),
    ];

    private static readonly string[] Labels = ["A", "B", "C", "D"];

    /// <summary>The three task files; the same seed gives the same records.</summary>
    public static IReadOnlyList<DemoTask> Generate(int seed, int arithmetic = 80, int copy = 60, int arc = 60)
    {
        var rng = new Random(seed);
        return [Arithmetic(rng, arithmetic), Copy(rng, copy), Arc(rng, arc)];
    }

    private static DemoTask Arithmetic(Random rng, int n)
    {
        var records = new List<JsonObject>();
        for (var i = 0; i < n; i++)
        {
            int a = rng.Next(10), b = rng.Next(10);
            records.Add(new JsonObject { ["instruction"] = "Add the numbers.", ["input"] = $"{a}+{b}", ["output"] = $"{a + b}" });
        }
        return Instruction("arithmetic", "arithmetic.jsonl", records);
    }

    private static DemoTask Copy(Random rng, int n)
    {
        var records = new List<JsonObject>();
        for (var i = 0; i < n; i++)
        {
            var w = Words[rng.Next(Words.Length)];
            records.Add(new JsonObject { ["instruction"] = "Repeat the word.", ["input"] = w, ["output"] = w });
        }
        return Instruction("copy", "copy.jsonl", records);
    }

    private static DemoTask Instruction(string name, string file, List<JsonObject> records)
    {
        var texts = records.Select(r => new TextPair(
            PromptTemplates.Instruction(InstructionTemplate.Plain, (string)r["instruction"]!, (string?)r["input"]),
            PromptTemplates.InstructionTarget((string?)r["output"]))).ToList();
        return new DemoTask(name, "plain", file, records, texts);
    }

    private static DemoTask Arc(Random rng, int n)
    {
        var records = new List<JsonObject>();
        var texts = new List<TextPair>();
        for (var i = 0; i < n; i++)
        {
            var (q, answer, wrong) = Facts[i % Facts.Length];
            var choices = wrong.Append(answer).OrderBy(_ => rng.Next()).ToArray();
            var key = Labels[Array.IndexOf(choices, answer)];
            records.Add(new JsonObject
            {
                ["id"] = $"demo-{i:D3}",
                ["question"] = q + "?",
                ["choices"] = new JsonObject
                {
                    ["text"] = new JsonArray(choices.Select(c => (JsonNode)JsonValue.Create(c)).ToArray()),
                    ["label"] = new JsonArray(Labels.Select(l => (JsonNode)JsonValue.Create(l)).ToArray()),
                },
                ["answerKey"] = key,
            });
            texts.Add(new TextPair(PromptTemplates.MultipleChoice(q + "?", Labels, choices), PromptTemplates.AnswerTarget(key)));
        }
        return new DemoTask("commonsense (ARC layout)", "arc-e", "arc.jsonl", records, texts);
    }

    /// <summary>Writes the task's records as JSONL (atomically) and returns the `TASK:PATH` argument for --data.</summary>
    public static string Write(DemoTask task, string dir)
    {
        var path = Path.Combine(dir, task.FileName);
        var options = new JsonSerializerOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        var lines = task.Records.Select(r => r.ToJsonString(options));
        GraphBuilder.IO.AtomicFile.WriteAllText(path, string.Join("\n", lines) + "\n");
        return $"{task.Task}:{path}";
    }
}
