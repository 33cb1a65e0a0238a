namespace MixLoRA.Inference;

public static class Program
{
    public static int Main(string[] args) => Cli.Commands.Run(args);
}
