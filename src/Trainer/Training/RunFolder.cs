using System.Runtime.InteropServices;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Trainer.Training;

/// <summary>
/// One process owns an output folder (a run, an artifacts or an export folder): an exclusive lock on
/// <c>DIR/.lock</c>, taken before anything is written, with the owner's pid and host in <c>DIR/.lock.owner</c>.
/// The lock is the OS's (flock through .NET's FileShare.None), so a process that died holds nothing: its
/// folder is taken over and the stale owner is named in a note.
/// </summary>
public sealed class RunFolder : IDisposable
{
    public const string LockName = ".lock", OwnerName = ".lock.owner";
    private readonly FileStream _lock;
    private readonly bool _created;

    private RunFolder(string dir, FileStream held, bool created) => (Dir, _lock, _created) = (dir, held, created);

    public string Dir { get; }

    /// <summary>Takes <paramref name="dir"/> (created if missing) for this process, or fails naming the owner.</summary>
    public static RunFolder Take(string dir, string what, TextWriter? log = null)
    {
        var created = !Directory.Exists(dir);
        Directory.CreateDirectory(dir);
        var lockFile = Path.Combine(dir, LockName);
        var ownerFile = Path.Combine(dir, OwnerName);
        FileStream held;
        try
        {
            held = new FileStream(lockFile, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException)
        {
            throw Fail.User($"{dir} is in use by another {what} ({Owner(ownerFile) ?? "owner unknown"})",
                "wait for it to finish, or give this run another --out");
        }
        if (Owner(ownerFile) is { } stale) log?.WriteLine($"note: took over {dir} from {stale}, which is no longer running");
        File.WriteAllText(ownerFile, $"pid {Environment.ProcessId} on {Environment.MachineName}");
        return new RunFolder(dir, held, created);
    }

    private static string? Owner(string file)
    {
        try
        {
            return File.Exists(file) ? File.ReadAllText(file).Trim() : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    public void Dispose()
    {
        try
        {
            File.Delete(Path.Combine(Dir, OwnerName));
        }
        catch (IOException)
        {
            // the folder went away with its contents: nothing left to release
        }
        _lock.Dispose();
        try
        {
            File.Delete(Path.Combine(Dir, LockName));
        }
        catch (IOException)
        {
            // another process took the folder between our unlock and the delete: the file is its lock now
        }
        // a run that failed before writing anything leaves no empty folder behind
        if (_created && Directory.Exists(Dir) && !Directory.EnumerateFileSystemEntries(Dir).Any()) Directory.Delete(Dir);
    }
}

/// <summary>
/// SIGINT/SIGTERM during a run: the first asks the loop to stop after the current step (it checkpoints and
/// says how to resume), a second one ends the process at once.
/// </summary>
public sealed class StopSignals : IDisposable
{
    private readonly PosixSignalRegistration[] _registrations;
    private volatile int _signal;

    public StopSignals(TextWriter log)
    {
        _registrations = [.. new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM }.Select(s => PosixSignalRegistration.Create(s, ctx =>
        {
            if (_signal != 0) return;                                                             // second signal: default action, exit now
            ctx.Cancel = true;
            _signal = ctx.Signal == PosixSignal.SIGINT ? 2 : 15;
            log.WriteLine($"\n{ctx.Signal}: stopping after this step and writing a checkpoint (send it again to stop at once)");
        }))];
    }

    /// <summary>The signal number asked for (2 or 15), or 0.</summary>
    public int Requested => _signal;

    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
    }
}
