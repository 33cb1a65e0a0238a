namespace MixLoRA.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        Runtime.RuntimeSettings.Use(Runtime.RuntimeSettings.FromEnvironment());     // the MIXLORA_* variables, read once here
        return Commands.Run(args);
    }
}
