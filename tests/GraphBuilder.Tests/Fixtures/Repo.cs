namespace MixLoRA.GraphBuilder.Tests.Fixtures;

/// <summary>Repository root, shared parity data (see the linked <see cref="MixLoRA.Tests.TestRepo"/>) and temp folders.</summary>
public static class Repo
{
    public static string Root => MixLoRA.Tests.TestRepo.Root;

    public static string Shared => MixLoRA.Tests.TestRepo.Shared;

    public static string Parity(string caseName, params string[] parts) =>
        Path.Combine([Shared, "parity", caseName, .. parts]);

    /// <summary>A fresh empty temp folder, removed by the caller (or left in /tmp).</summary>
    public static string TempDir(string tag)
    {
        var d = Path.Combine(Path.GetTempPath(), "mixlora-tests", $"{tag}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(d);
        return d;
    }
}
