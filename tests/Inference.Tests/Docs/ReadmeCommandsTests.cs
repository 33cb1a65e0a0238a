using System.Text;
using System.Text.RegularExpressions;
using MixLoRA.Inference.Generation;
using MixLoRA.Inference.Tests.Fixtures;
using MixLoRA.Cli.Demo;
using MixLoRA.Runtime;
using MixLoRA.Text.Tokenization;

namespace MixLoRA.Inference.Tests.Docs;

/// <summary>
/// The README's command examples run (issue 16 item 3): every fenced block after a `&lt;!-- readme-test --&gt;`
/// line is read as bash (variable assignments, `\` continuations, comments, '…', "…" and $'…' quoting), and each
/// `bin/mixlora-NAME` line runs in this process through the command table that owns NAME. `D`, the demo folder,
/// is a fresh demo made here first, as `bin/mixlora-train` makes it (default steps and seed; composed graphs, as
/// `--no-fused-kernels`, because the fused CPU kernels are C# and run several times slower in this Debug build).
/// Each command must exit with 0, every `--out` it names must exist afterwards, and a trailing `# → TEXT`
/// comment is the first line the command prints. The same demo run checks the demo's held-out figures.
/// </summary>
[TestClass]
[DoNotParallelize]
public sealed class ReadmeCommandsTests
{
    public const string Marker = "<!-- readme-test -->";

    /// <summary>Least gain of the trained adapter over the base model, as a fraction of the held-out records.</summary>
    private const double Margin = 0.2;

    private static readonly StringWriter Log = new();

    /// <summary>One default demo run (300 steps, seed 7) for both tests; composed graphs (see the class summary).</summary>
    private static readonly Lazy<DemoResult> Demo = new(() => DemoCommand.Execute(
        new DemoCommand.DemoSettings(Path.Combine(Files.TempDir(), "demo"), Steps: 300, Lr: 3e-3, Seed: 7, Device.Cpu, Quiet: true, Fused: GraphBuilder.Ops.FusedOps.None), Log));


    /// <summary>
    /// The demo shows learning (issue 16 item 4): the trained adapter beats the base model on the held-out records
    /// of every task, by a margin, and the demo prints both figures.
    /// </summary>
    [TestMethod]
    public void DemoTrainedAdapterBeatsTheBaseModelOnHeldOutRecordsOfEveryTask()
    {
        var scores = Demo.Value.HeldOut;
        CollectionAssert.AreEqual(new[] { "arithmetic", "copy", "arc" }, scores.Select(s => s.Task).ToArray());
        foreach (var s in scores)
        {
            Assert.AreEqual(30, s.Count, s.Task);
            Assert.IsGreaterThan(s.Base + Margin, s.Trained, $"{s.Task}: base {s.BaseCorrect}/{s.Count}, trained {s.TrainedCorrect}/{s.Count}\n{Log}");
            StringAssert.Contains(Log.ToString(), $"{s.BaseCorrect,3}/{s.Count} ({s.Base:P0}) → {s.TrainedCorrect,3}/{s.Count} ({s.Trained:P0})", "the demo prints the figures");
        }
    }

    [TestMethod]
    public void ReadmeWalkthroughRunsOnTheDemo()
    {
        var commands = MarkedCommands(File.ReadAllText(Path.Combine(Files.RepoRoot(), "README.md")));
        Assert.IsGreaterThan(5, commands.Count, "the README marks its walkthrough with " + Marker);
        var root = Demo.Value.Root;
        var variables = new Dictionary<string, string>(StringComparer.Ordinal) { ["D"] = root };
        foreach (var line in commands) Run(line, variables);
    }

    [TestMethod]
    public void ShellWordsFollowBash()
    {
        var vars = new Dictionary<string, string> { ["D"] = "/x y" };
        CollectionAssert.AreEqual(new[] { "bin/mixlora-generate", "--model", "/x y/export", "--prompt", "Add.\n1+2\n", "it's", "$D", "a b/c" },
            Words("bin/mixlora-generate --model \"$D\"/export --prompt $'Add.\\n1+2\\n' it\\'s '$D' \"a b\"/c", vars).ToArray());
        var cmds = MarkedCommands("x\n" + Marker + "\n```bash\nD=d   # demo\nbin/mixlora-eval --a 1 \\\n    --b 2   # → 7\n# note\n```\n```bash\nbin/no\n```\n");
        CollectionAssert.AreEqual(new[] { "D=d   # demo", "bin/mixlora-eval --a 1 --b 2   # → 7" }, cmds.ToArray());
    }

    /// <summary>The logical lines (continuations joined, comment-only and blank lines dropped) of each marked block.</summary>
    public static List<string> MarkedCommands(string markdown)
    {
        var lines = markdown.Split('\n').Select(l => l.TrimEnd('\r')).ToList();
        var result = new List<string>();
        for (var i = 0; i < lines.Count; i++)
        {
            if (lines[i].Trim() != Marker) continue;
            var j = i + 1;
            while (j < lines.Count && lines[j].Trim().Length == 0) j++;
            Assert.IsTrue(j < lines.Count && lines[j].StartsWith("```", StringComparison.Ordinal), $"README line {i + 1}: {Marker} must precede a fenced block");
            var current = new StringBuilder();
            for (j++; j < lines.Count && !lines[j].StartsWith("```", StringComparison.Ordinal); j++)
            {
                var l = lines[j];
                if (current.Length == 0 && (l.TrimStart().StartsWith('#') || l.Trim().Length == 0)) continue;
                if (l.EndsWith('\\'))
                {
                    current.Append(l[..^1].TrimEnd()).Append(' ');
                    continue;
                }
                current.Append(current.Length > 0 ? l.TrimStart() : l);
                result.Add(current.ToString());
                current.Clear();
            }
        }
        return result;
    }

    private static void Run(string line, Dictionary<string, string> variables)
    {
        var (code, comment) = SplitComment(line);
        var words = Words(code, variables);
        if (words.Count == 1 && Regex.Match(words[0], "^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", RegexOptions.Singleline) is { Success: true } m)
        {
            // the test's own value of D stands in for the README's artifacts/demo
            variables.TryAdd(m.Groups[1].Value, m.Groups[2].Value);
            return;
        }
        var name = Regex.Match(words[0], "^bin/mixlora-([a-z-]+)$");
        Assert.IsTrue(name.Success, $"README command does not start with bin/mixlora-NAME: {line}");
        var args = words.Skip(1).ToArray();
        var (exit, stdout) = Capture(() => Invoke(name.Groups[1].Value, args));
        Assert.AreEqual(0, exit, $"{line}\n{stdout}");
        for (var k = 0; k + 1 < args.Length; k++)
            if (args[k] == "--out") Assert.IsTrue(File.Exists(args[k + 1]) || Directory.Exists(args[k + 1]), $"{line}: --out {args[k + 1]} missing");
        if (comment is not null && Regex.Match(comment, "^#\\s*→\\s*(.+)$") is { Success: true } want)
        {
            var first = stdout.Split('\n')[0].Trim();
            Assert.AreEqual(want.Groups[1].Value.Trim(), first, $"{line}\nprinted:\n{stdout}");
        }
    }

    /// <summary>bin/mixlora-NAME → the in-process command table (the launchers' mapping, tools/setup.sh).</summary>
    private static int Invoke(string name, string[] args)
    {
        Assert.IsTrue(MixLoRA.Cli.Commands.Table(MixLoRA.Cli.CommandServices.Default).ContainsKey(name), $"no command '{name}' in the command table");
        return MixLoRA.Cli.Commands.Run([name, .. args]);
    }

    private static (int Code, string Out) Capture(Func<int> run)
    {
        var (w, old) = (new StringWriter(), Console.Out);
        Console.SetOut(w);
        try
        {
            return (run(), w.ToString());
        }
        finally
        {
            Console.SetOut(old);
        }
    }

    /// <summary>The command and its trailing comment (a # after whitespace, outside quotes), or null.</summary>
    private static (string Code, string? Comment) SplitComment(string line)
    {
        char quote = '\0';
        for (var i = 0; i < line.Length; i++)
        {
            var c = line[i];
            if (quote != '\0')
            {
                if (c == '\\' && quote != '\'') i++;
                else if (c == quote) quote = '\0';
            }
            else if (c == '\\') i++;
            else if (c is '\'' or '"') quote = c;
            else if (c == '#' && (i == 0 || char.IsWhiteSpace(line[i - 1]))) return (line[..i].TrimEnd(), line[i..]);
        }
        return (line, null);
    }

    /// <summary>Bash words: '…' literal, "…" with $VAR, $'…' with \n \t \\ \' escapes, bare words with $VAR and \x.</summary>
    public static List<string> Words(string code, IReadOnlyDictionary<string, string> vars)
    {
        var words = new List<string>();
        var w = new StringBuilder();
        var inWord = false;
        for (var i = 0; i < code.Length; i++)
        {
            var c = code[i];
            if (char.IsWhiteSpace(c))
            {
                if (inWord) words.Add(w.ToString());
                inWord = false;
                w.Clear();
                continue;
            }
            inWord = true;
            if (c == '$' && i + 1 < code.Length && code[i + 1] == '\'')
            {
                for (i += 2; code[i] != '\''; i++)
                {
                    if (code[i] != '\\') { w.Append(code[i]); continue; }
                    i++;
                    w.Append(code[i] switch { 'n' => '\n', 't' => '\t', var e => e });
                }
            }
            else if (c == '\'')
            {
                for (i++; code[i] != '\''; i++) w.Append(code[i]);
            }
            else if (c == '"')
            {
                for (i++; code[i] != '"'; i++)
                {
                    if (code[i] == '$') i = Expand(code, i, vars, w);
                    else if (code[i] == '\\' && i + 1 < code.Length && code[i + 1] is '"' or '\\' or '$') w.Append(code[++i]);
                    else w.Append(code[i]);
                }
            }
            else if (c == '\\' && i + 1 < code.Length) w.Append(code[++i]);
            else if (c == '$') i = Expand(code, i, vars, w);
            else w.Append(c);
        }
        if (inWord) words.Add(w.ToString());
        return words;
    }

    /// <summary>Appends $NAME or ${NAME} at <paramref name="i"/> and returns the index of its last character.</summary>
    private static int Expand(string code, int i, IReadOnlyDictionary<string, string> vars, StringBuilder w)
    {
        var m = Regex.Match(code[(i + 1)..], "^(?:\\{([A-Za-z_][A-Za-z0-9_]*)\\}|([A-Za-z_][A-Za-z0-9_]*))");
        Assert.IsTrue(m.Success, $"unsupported $ in: {code}");
        var name = m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value;
        Assert.IsTrue(vars.TryGetValue(name, out var value), $"${name} is not set before: {code}");
        w.Append(value);
        return i + m.Length;
    }
}
