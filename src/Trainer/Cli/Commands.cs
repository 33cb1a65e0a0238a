namespace MixLoRA.Trainer.Cli;

/// <summary>Entry point of the trainer executable: `MixLoRA.Trainer COMMAND ...` (bin/mixlora-COMMAND).</summary>
public static class Commands
{
    static Commands() => Demo.DemoCommand.Install();

    public static int Run(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help")
        {
            Console.WriteLine("usage: mixlora-<command> ...  (commands: " + string.Join(", ", Table.Keys) + ")");
            return args.Length == 0 ? 2 : 0;
        }
        if (!Table.TryGetValue(args[0], out var command))
        {
            Console.Error.WriteLine($"error: unknown command '{args[0]}': use one of {string.Join(", ", Table.Keys)}");
            return 2;
        }
        return CliHost.Guard(() => command(args[1..]));
    }

    /// <summary>Command name (as in bin/mixlora-NAME) to its handler.</summary>
    public static readonly IReadOnlyDictionary<string, Func<string[], int>> Table = new Dictionary<string, Func<string[], int>>
    {
        ["data"] = DataCommand.Run,
        ["build-graph"] = BuildGraphCommand.Run,
        ["train"] = TrainCommand.Run,
        ["doctor"] = DoctorCommand.Run,
        ["score"] = ScoreCommand.Run,
        ["bench"] = BenchCommand.Run,
    };
}
