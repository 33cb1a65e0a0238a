namespace MixLoRA.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        var settings = Runtime.RuntimeSettings.FromEnvironment();                      // the MIXLORA_* variables, read once here
        return Commands.Run(args, CommandServices.Default with { Settings = settings });
    }
}
