namespace MixLoRA.Trainer.Tests.Fixtures;

/// <summary>Repository root and shared data folder (see the linked <see cref="MixLoRA.Tests.TestRepo"/>).</summary>
public static class Repo
{
    public static string Root => MixLoRA.Tests.TestRepo.Root;

    public static string Shared => MixLoRA.Tests.TestRepo.Shared;
}
