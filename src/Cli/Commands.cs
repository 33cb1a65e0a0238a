using MixLoRA.Cli.Bench;
using MixLoRA.Cli.Demo;
using MixLoRA.Cli.Diagnostics;
using MixLoRA.Runtime;
using MixLoRA.Runtime.Collectives;
using MixLoRA.Text.Tokenization;

namespace MixLoRA.Cli;

/// <summary>
/// What the commands take from their host rather than from static state: how a tokenizer is loaded from a
/// path (a `tokenizer.json` file or a folder holding one; tests pass a fake), and the runtime settings read once
/// at start-up (<see cref="Program.Main"/>: the MIXLORA_* variables; default none), which each command combines
/// with its flags (--device) into the runtime it creates.
/// </summary>
public sealed record CommandServices(Func<string, ITokenizer> LoadTokenizer)
{
    /// <summary>The MIXLORA_* settings (<see cref="RuntimeSettings.FromEnvironment"/> in the executable).</summary>
    public RuntimeSettings Settings { get; init; } = RuntimeSettings.Default;

    /// <summary>The data-parallel launcher's variables (RANK, WORLD_SIZE, …; <see cref="DistributedSettings.FromEnvironment"/> in the executable).</summary>
    public DistributedSettings Distributed { get; init; } = DistributedSettings.None;

    /// <summary>The real wiring: <see cref="HfTokenizer"/> from a folder or a file.</summary>
    public static CommandServices Default { get; } = new(p => Directory.Exists(p) ? HfTokenizer.FromDirectory(p) : HfTokenizer.Load(p));
}

/// <summary>Entry point of the executable: `MixLoRA.Cli COMMAND ...` (bin/mixlora-COMMAND).</summary>
public static class Commands
{
    public static int Run(string[] args) => Run(args, CommandServices.Default);

    public static int Run(string[] args, CommandServices services)
    {
        var table = Table(services);
        if (args.Length == 0 || args[0] is "-h" or "--help")
        {
            Console.WriteLine("usage: mixlora-<command> ...  (commands: " + string.Join(", ", table.Keys) + ")");
            return args.Length == 0 ? 2 : 0;
        }
        if (!table.TryGetValue(args[0], out var command))
        {
            Console.Error.WriteLine($"error: unknown command '{args[0]}': use one of {string.Join(", ", table.Keys)}");
            return 2;
        }
        return CliHost.Guard(() =>
        {
            CliHost.CheckArgumentLengths(args);
            return command(args[1..]);
        }, services.Settings);
    }

    /// <summary>
    /// Command name (as in bin/mixlora-NAME) to its handler, wired with <paramref name="services"/>; `train`
    /// gets the demo as what it runs without --artifacts.
    /// </summary>
    public static IReadOnlyDictionary<string, Func<string[], int>> Table(CommandServices services) => new Dictionary<string, Func<string[], int>>
    {
        ["data"] = a => DataCommand.Run(a, services.LoadTokenizer),
        ["build-graph"] = BuildGraphCommand.Run,
        ["train"] = a => TrainCommand.Run(a, services.Settings, demo: d => DemoCommand.Run(d, services.Settings), services.Distributed),
        ["doctor"] = a => DoctorCommand.Run(a, services.Settings),
        ["score"] = a => ScoreCommand.Run(a, services.Settings),
        ["bench"] = a => BenchCommand.Run(a, services.Settings, services.Distributed),
        ["export"] = ExportCommand.Run,
        ["generate"] = a => GenerateCommand.Run(a, services.LoadTokenizer, services.Settings),
        ["eval"] = a => EvalCommand.Run(a, services.LoadTokenizer, services.Settings),
    };
}
