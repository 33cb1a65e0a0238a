namespace MixLoRA.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        var settings = Runtime.RuntimeSettings.FromEnvironment();                      // the MIXLORA_* variables, read once here
        var distributed = Runtime.Collectives.DistributedSettings.FromEnvironment();   // RANK, WORLD_SIZE, … (a data-parallel launcher's), read once here
        return Commands.Run(args, CommandServices.Default with { Settings = settings, Distributed = distributed });
    }
}
