using MixLoRA.Trainer.Cli;

namespace MixLoRA.Inference.Cli;

/// <summary>Entry point of the inference executable: `MixLoRA.Inference COMMAND ...` (bin/mixlora-COMMAND).</summary>
public static class Commands
{
    public static int Run(string[] args)
    {
        if (args.Length == 0 || !Table.TryGetValue(args[0], out var command))
        {
            Console.Error.WriteLine("usage: mixlora-{" + string.Join("|", Table.Keys) + "} ...");
            return 2;
        }
        return CliHost.Guard(() => command(args[1..]));
    }

    public static readonly IReadOnlyDictionary<string, Func<string[], int>> Table = new Dictionary<string, Func<string[], int>>
    {
        ["export"] = ExportCommand.Run,
        ["generate"] = GenerateCommand.Run,
        ["eval"] = EvalCommand.Run,
    };
}
