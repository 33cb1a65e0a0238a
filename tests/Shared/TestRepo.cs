namespace MixLoRA.Tests;

/// <summary>
/// The one repository locator for all test projects (linked into each): the repo root (the folder holding
/// MixLoRA.sln) and the shared data folder ($MIXLORA_SHARED, else `shared/` inside the root, else a `shared`
/// beside the root or one of its ancestors — CI clones have it beside, git worktrees one level deeper).
/// </summary>
internal static class TestRepo
{
    private static readonly Lazy<string> RootDir = new(FindRoot);
    private static readonly Lazy<string?> SharedDir = new(FindShared);

    public static string Root => RootDir.Value;

    public static string Shared => SharedDir.Value ?? throw new DirectoryNotFoundException($"no shared/ folder in or beside {Root} (set MIXLORA_SHARED)");

    /// <summary>The model families with transformers/PEFT reference cases in tests/fixtures/families (tools/make-family-cases.py).</summary>
    public static IEnumerable<object[]> Families => new[] { "qwen3", "gemma2", "gemma3_text", "phi3", "llama3" }.Select(f => new object[] { f });

    /// <summary>tests/fixtures/families/FAMILY: model/, data.jsonl, adapter_init/, adapter_final/, expected/.</summary>
    public static string FamilyCase(string family) => Path.Combine(Root, "tests", "fixtures", "families", family);

    /// <summary>shared/parity/CASE, or null when there is no such folder.</summary>
    public static string? FindParity(string caseName)
    {
        if (SharedDir.Value is not { } shared) return null;
        var p = Path.Combine(shared, "parity", caseName);
        return Directory.Exists(p) ? p : null;
    }

    /// <summary>
    /// A fresh folder under /tmp/GROUP/PID: every temporary folder of this test process lives below one run folder,
    /// which <see cref="DeleteRunFolders"/> removes when the assembly's tests end (and folders of processes that
    /// died are removed the next time).
    /// </summary>
    public static string NewTempDir(string group, string? tag = null)
    {
        var dir = Path.Combine(Path.GetTempPath(), group, Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture),
            tag is null ? Guid.NewGuid().ToString("N") : $"{tag}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>Removes this process's run folders and those of processes no longer running (called at assembly cleanup).</summary>
    public static void DeleteRunFolders(params string[] groups)
    {
        foreach (var group in groups)
        {
            var root = Path.Combine(Path.GetTempPath(), group);
            if (!Directory.Exists(root)) continue;
            foreach (var run in Directory.GetDirectories(root))
            {
                var name = Path.GetFileName(run);
                var mine = name == Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
                if (!mine && (!int.TryParse(name, out var pid) || Alive(pid))) continue;
                try
                {
                    Directory.Delete(run, recursive: true);
                }
                catch (IOException)
                {
                    // a file still open by a child process: left for the next run
                }
                catch (UnauthorizedAccessException)
                {
                    // likewise
                }
            }
        }
    }

    private static bool Alive(int pid)
    {
        try
        {
            using var p = System.Diagnostics.Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    private static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            if (File.Exists(Path.Combine(d.FullName, "MixLoRA.sln"))) return d.FullName;
        }
        throw new DirectoryNotFoundException($"no MixLoRA.sln above {AppContext.BaseDirectory}");
    }

    private static string? FindShared()
    {
        if (Environment.GetEnvironmentVariable("MIXLORA_SHARED") is { Length: > 0 } env && Directory.Exists(env)) return env;
        var inside = Path.Combine(Root, "shared");
        if (Directory.Exists(inside)) return inside;
        for (var d = Directory.GetParent(Root); d is not null; d = d.Parent)
        {
            var candidate = Path.Combine(d.FullName, "shared");
            if (Directory.Exists(Path.Combine(candidate, "parity"))) return candidate;
        }
        return null;
    }
}
