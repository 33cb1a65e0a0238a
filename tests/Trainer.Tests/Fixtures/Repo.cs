namespace MixLoRA.Trainer.Tests.Fixtures;

/// <summary>Locates the repository root and the shared data folder (parity data, expected outputs) from a test run.</summary>
public static class Repo
{
    private static readonly Lazy<string> RootDir = new(FindRoot);
    private static readonly Lazy<string> SharedDir = new(FindShared);

    /// <summary>The folder holding MixLoRA.sln, found by walking up from the test binaries.</summary>
    public static string Root => RootDir.Value;

    /// <summary>
    /// The shared data folder: $MIXLORA_SHARED if set, else `shared/` inside the repo root, else a `shared`
    /// sibling of the repo root or of one of its ancestors (git worktrees live one level deeper).
    /// </summary>
    public static string Shared => SharedDir.Value;

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MixLoRA.sln"))) return dir.FullName;
        throw new InvalidOperationException($"no folder with MixLoRA.sln above {AppContext.BaseDirectory}");
    }

    private static string FindShared()
    {
        if (Environment.GetEnvironmentVariable("MIXLORA_SHARED") is { Length: > 0 } env && Directory.Exists(env)) return env;
        string inside = Path.Combine(Root, "shared");
        if (Directory.Exists(inside)) return inside;
        for (var dir = Directory.GetParent(Root); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "shared");
            if (Directory.Exists(candidate)) return candidate;
        }
        throw new InvalidOperationException($"no shared/ folder in or beside {Root} (set MIXLORA_SHARED)");
    }
}
