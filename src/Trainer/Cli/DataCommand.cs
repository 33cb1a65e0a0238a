namespace MixLoRA.Trainer.Cli;

/// <summary>`mixlora-data SUBCOMMAND ...`: data preparation tools (tokenize, ...).</summary>
public static class DataCommand
{
    /// <summary>Subcommand name to its handler (which gets the arguments after the name).</summary>
    public static readonly IReadOnlyDictionary<string, Func<string[], int>> Subcommands = new Dictionary<string, Func<string[], int>>
    {
        ["tokenize"] = DataTokenizeCommand.Run,
        ["prepare"] = DataPrepareCommand.Run,
    };

    public static int Run(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help")
        {
            Console.WriteLine("usage: mixlora-data <subcommand> ...  (subcommands: " + string.Join(", ", Subcommands.Keys) + ")");
            return args.Length == 0 ? 2 : 0;
        }
        if (!Subcommands.TryGetValue(args[0], out var run))
        {
            Console.Error.WriteLine($"error: unknown data subcommand '{args[0]}': use one of {string.Join(", ", Subcommands.Keys)}");
            return 2;
        }
        return run(args[1..]);
    }
}
