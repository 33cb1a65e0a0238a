namespace MixLoRA.GraphBuilder.IO;

/// <summary>
/// An output folder that appears only when complete: written into a temporary sibling, then renamed over the
/// old one. While it is written, <c>OUT.lock</c> beside it (an OS lock) keeps a second writer out. A failure or a
/// kill leaves the old folder as it was and nothing new beside it but a stale <c>OUT.tmp-PID</c>; a refused write
/// (disk full, permissions) removes the temporary sibling and is reported naming the folder (<see cref="Fail.Write"/>).
/// </summary>
public static class AtomicFolder
{
    /// <summary>Runs <paramref name="write"/> on a fresh temporary sibling of <paramref name="outDir"/> and publishes it.</summary>
    public static T Write<T>(string outDir, string what, Func<string, T> write)
    {
        var full = Path.GetFullPath(outDir).TrimEnd(Path.DirectorySeparatorChar);
        var parent = Path.GetDirectoryName(full) ?? ".";
        Directory.CreateDirectory(parent);
        var lockPath = full + ".lock";
        FileStream held;
        try
        {
            held = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException)
        {
            throw Fail.User($"{outDir} is being written by another {what}", "wait for it to finish, or choose another --out");
        }
        using (held)
        {
            foreach (var stale in Directory.GetDirectories(parent, Path.GetFileName(full) + ".tmp-*")) Directory.Delete(stale, recursive: true);
            var tmp = $"{full}.tmp-{Environment.ProcessId}";
            try
            {
                var result = write(tmp);
                var old = $"{full}.old-{Environment.ProcessId}";
                if (Directory.Exists(full)) Directory.Move(full, old);
                Directory.Move(tmp, full);
                if (Directory.Exists(old)) Directory.Delete(old, recursive: true);
                return result;
            }
            catch (Exception e)
            {
                if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
                if (Fail.WriteFault(e) is { } io) throw Fail.Write(full, io);
                throw;
            }
            finally
            {
                File.Delete(lockPath);
            }
        }
    }
}
