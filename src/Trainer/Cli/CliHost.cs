using System.CommandLine;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Trainer.Cli;

/// <summary>
/// Runs a command; user mistakes become one line on stderr (`error: ...`) and a non-zero exit code,
/// never a stack trace.
/// </summary>
public static class CliHost
{
    public static int Guard(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (UserError e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // the file system refused (unreadable folder, disk full, ...): the message names the path
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("interrupted");
            return 130;
        }
    }

    /// <summary>
    /// Parses <paramref name="args"/> for <paramref name="command"/>; bad flags and values are reported as
    /// `error: ...` lines on stderr with exit code 2, otherwise the command's action runs.
    /// </summary>
    public static int Invoke(RootCommand command, string[] args)
    {
        var parsed = command.Parse(args);
        if (parsed.Errors.Count > 0 && !args.Contains("--help") && !args.Contains("-h"))
        {
            foreach (var e in parsed.Errors) Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine($"(run with --help for the options)");
            return 2;
        }
        return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }
}
