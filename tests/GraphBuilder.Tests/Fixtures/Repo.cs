namespace MixLoRA.GraphBuilder.Tests.Fixtures;

/// <summary>Finds the repository root (the folder holding MixLoRA.sln) and the shared parity data.</summary>
public static class Repo
{
    private static readonly Lazy<string> RootPath = new(FindRoot);

    public static string Root => RootPath.Value;

    /// <summary>The shared folder: a sibling of the repo root named "shared", or "shared/" inside it.</summary>
    public static string Shared
    {
        get
        {
            var sibling = Path.Combine(Path.GetDirectoryName(Root)!, "shared");
            if (Directory.Exists(Path.Combine(sibling, "parity"))) return sibling;
            var inside = Path.Combine(Root, "shared");
            if (Directory.Exists(inside)) return inside;
            // worktrees live under /work/wt/<name>; the shared folder sits beside them two levels up
            var up2 = Path.Combine(Path.GetDirectoryName(Path.GetDirectoryName(Root)!)!, "shared");
            if (Directory.Exists(up2)) return up2;
            throw new DirectoryNotFoundException($"no shared/ folder beside or inside {Root}");
        }
    }

    public static string Parity(string caseName, params string[] parts) =>
        Path.Combine([Shared, "parity", caseName, .. parts]);

    /// <summary>A fresh empty temp folder, removed by the caller (or left in /tmp).</summary>
    public static string TempDir(string tag)
    {
        var d = Path.Combine(Path.GetTempPath(), "mixlora-tests", $"{tag}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(d);
        return d;
    }

    private static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "MixLoRA.sln"))) return d.FullName;
        throw new DirectoryNotFoundException($"no MixLoRA.sln above {AppContext.BaseDirectory}");
    }
}
