using MixLoRA.GraphBuilder;

namespace MixLoRA.Trainer.Cli;

/// <summary>Runs a command; user mistakes become one line on stderr and exit code 1, never a stack trace.</summary>
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
        catch (InvalidOperationException e) when (e.InnerException is Microsoft.ML.OnnxRuntime.OnnxRuntimeException && Environment.GetEnvironmentVariable("MIXLORA_DEBUG") != "1")
        {
            Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine("(set MIXLORA_DEBUG=1 for the stack trace)");
            return 1;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("interrupted");
            return 130;
        }
    }
}
