namespace MixLoRA.GraphBuilder.Tests.Fixtures;

/// <summary>Repository root, shared parity data (see the linked <see cref="MixLoRA.Tests.TestRepo"/>) and temp folders.</summary>
public static class Repo
{
    public static string Root => MixLoRA.Tests.TestRepo.Root;

    public static string Shared => MixLoRA.Tests.TestRepo.Shared;

    public static string Parity(string caseName, params string[] parts) =>
        Path.Combine([Shared, "parity", caseName, .. parts]);

    /// <summary>A fresh empty temp folder under this test run's folder, removed when the assembly's tests end.</summary>
    public static string TempDir(string tag)
    {
        return MixLoRA.Tests.TestRepo.NewTempDir("mixlora-tests", tag);
    }
}
