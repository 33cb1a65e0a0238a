using System.Diagnostics;
using MixLoRA.Cli;

namespace MixLoRA.Trainer.Tests.Fixtures;

/// <summary>The CLI in a child process (its own signals, locks and ONNX Runtime environment), output redirected.</summary>
internal static class ChildCli
{
    public static Process Start(IEnumerable<string> args, IReadOnlyDictionary<string, string?>? environment = null)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, RedirectStandardError = true };
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath) != Path.GetFileNameWithoutExtension(typeof(Commands).Assembly.Location))
            psi.ArgumentList.Add(typeof(Commands).Assembly.Location);                      // the test host is `dotnet`: run the CLI's dll
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in environment ?? new Dictionary<string, string?>()) psi.Environment[k] = v;
        return Process.Start(psi)!;
    }

    /// <summary>Waits for the process; its exit code, stdout and stderr.</summary>
    public static (int Code, string Out, string Err) Finish(Process p)
    {
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output, err.Result);
    }
}
