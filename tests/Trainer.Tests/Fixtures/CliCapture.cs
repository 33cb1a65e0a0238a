using MixLoRA.Cli;

namespace MixLoRA.Trainer.Tests.Fixtures;

/// <summary>Runs the CLI in process with stdout muted; returns the exit code and what it wrote to stderr.</summary>
internal static class CliCapture
{
    public static (int Code, string Err) Run(params string[] args) => Run(CommandServices.Default, args);

    /// <summary>As <see cref="Run(string[])"/>, with the host's <paramref name="services"/> (tokenizer loader, runtime settings).</summary>
    public static (int Code, string Err) Run(CommandServices services, params string[] args)
    {
        var (err, oldErr, oldOut) = (new StringWriter(), Console.Error, Console.Out);
        Console.SetError(err);
        Console.SetOut(TextWriter.Null);
        try
        {
            return (Commands.Run(args, services), err.ToString());
        }
        finally
        {
            Console.SetError(oldErr);
            Console.SetOut(oldOut);
        }
    }
}
