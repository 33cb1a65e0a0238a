using System.CommandLine;
using MixLoRA.GraphBuilder;
using MixLoRA.Runtime;

namespace MixLoRA.Cli;

/// <summary>
/// Runs a command; user mistakes become one line on stderr (`error: ...`) and a non-zero exit code,
/// never a stack trace.
/// </summary>
public static class CliHost
{
    /// <summary>`--cuda-graph`, shared by mixlora-train and mixlora-bench.</summary>
    public static Option<bool> CudaGraphOption() => new("--cuda-graph")
    {
        Description = "replay the grad step as a CUDA graph after two plain runs (cuda; needs lora dropout 0: ONNX Runtime's Dropout masks would repeat)",
    };

    /// <summary>Runs <paramref name="body"/>; with <see cref="RuntimeSettings.Debug"/> runtime failures keep their stack trace.</summary>
    public static int Guard(Func<int> body, RuntimeSettings settings)
    {
        try
        {
            return body();
        }
        catch (UserError e) when (e.InnerException is null || !settings.Debug)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
        catch (Microsoft.ML.OnnxRuntime.OnnxRuntimeException e) when (!settings.Debug)
        {
            // a run that ONNX Runtime failed (out of memory, a kernel's error): its message, without the stack trace
            Console.Error.WriteLine($"error: ONNX Runtime failed: {e.Message.ReplaceLineEndings(" ")}: set MIXLORA_DEBUG=1 for the stack trace");
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
    /// The longest argument taken (32 Ki characters, Windows' whole command line). Issue 17 measured a CLR fatal
    /// error for arguments over ~33,000 characters; long text belongs in a file (--prompt-file, --data FILE).
    /// </summary>
    public const int MaxArgumentLength = 32 * 1024;

    /// <summary>Refuses an argument longer than <see cref="MaxArgumentLength"/> before anything parses it, naming it (and the option it follows).</summary>
    public static void CheckArgumentLengths(IReadOnlyList<string> args)
    {
        for (var i = 0; i < args.Count; i++)
        {
            if (args[i].Length <= MaxArgumentLength) continue;
            var option = i > 0 && args[i - 1].StartsWith("--", StringComparison.Ordinal) && args[i - 1].Length <= 40 ? $" of {args[i - 1]}" : "";
            throw Fail.User(FormattableString.Invariant($"the argument{option} '{args[i][..40]}…' is {args[i].Length:N0} characters long, over the limit of {MaxArgumentLength:N0}"),
                "pass a long prompt with --prompt-file FILE, and data with --data FILE");
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
            foreach (var e in parsed.Errors) Console.Error.WriteLine($"error: {Readable(e.Message)}");
            Console.Error.WriteLine($"(run with --help for the options)");
            return 2;
        }
        return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }

    /// <summary>System.CommandLine's "Cannot parse argument 'x' for option '--steps' as expected type 'System.Int32'" in plain words.</summary>
    private static string Readable(string message)
    {
        var m = System.Text.RegularExpressions.Regex.Match(message, @"^Cannot parse argument '(.*)' for option '(.*)' as expected type '(.*)'\.?$");
        if (!m.Success) return message;
        var type = m.Groups[3].Value;
        var kind = type.Contains("Int", StringComparison.Ordinal) ? "an integer" : type.Contains("Double", StringComparison.Ordinal) ? "a number" : type.Contains("Boolean", StringComparison.Ordinal) ? "true or false" : "a valid value";
        return $"{m.Groups[2].Value} '{m.Groups[1].Value}' is not {kind}";
    }
}
