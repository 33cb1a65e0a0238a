using MixLoRA.Text.Tokenization;

namespace MixLoRA.Cli;

/// <summary>`mixlora-data SUBCOMMAND ...`: data preparation tools (tokenize, ...).</summary>
public static class DataCommand
{
    /// <summary>Subcommand name to its handler (which gets the arguments after the name).</summary>
    public static IReadOnlyDictionary<string, Func<string[], int>> Subcommands(Func<string, ITokenizer> loadTokenizer) => new Dictionary<string, Func<string[], int>>
    {
        ["tokenize"] = DataTokenizeCommand.Run,
        ["prepare"] = a => DataPrepareCommand.Run(a, loadTokenizer),
    };

    /// <summary>Runs a subcommand; <paramref name="loadTokenizer"/> loads the tokenizer of `prepare`.</summary>
    public static int Run(string[] args, Func<string, ITokenizer> loadTokenizer)
    {
        var subcommands = Subcommands(loadTokenizer);
        if (args.Length == 0 || args[0] is "-h" or "--help")
        {
            Console.WriteLine("usage: mixlora-data <subcommand> ...  (subcommands: " + string.Join(", ", subcommands.Keys) + ")");
            return args.Length == 0 ? 2 : 0;
        }
        if (!subcommands.TryGetValue(args[0], out var run))
        {
            Console.Error.WriteLine($"error: unknown data subcommand '{args[0]}': use one of {string.Join(", ", subcommands.Keys)}");
            return 2;
        }
        return run(args[1..]);
    }
}
