using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using MixLoRA.Runtime.Collectives;

namespace MixLoRA.Cli.Distributed;

/// <summary>
/// `mixlora-train --nproc N` (and `mixlora-bench --nproc N`): starts N processes of this command on this host, rank r with RANK=r, WORLD_SIZE=N,
/// LOCAL_RANK=r, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT (what torchrun sets), the rest of the environment
/// (NCCL_* included) as it is. Rank 0's output passes through as it is, the others' lines with a `[rank r] `
/// prefix; `error:` lines are held back and one is printed at the end: the first failure's (<see cref="Outcome"/>).
/// When a rank fails, the others get <see cref="Grace"/> to stop on their own (they see it through the collective)
/// before they are killed. SIGTERM to this process is passed on to the ranks (Ctrl-C reaches them from the terminal).
/// </summary>
public static partial class NprocLauncher
{
    /// <summary>How long the other ranks may take to stop after one failed.</summary>
    public static readonly TimeSpan Grace = TimeSpan.FromSeconds(30);

    /// <summary>A rank's outcome: exit code, its first `error:` line (without the prefix), and when it exited among the others.</summary>
    public sealed record Exit(int Rank, int Code, string? Error, int Order);

    /// <param name="command">the command the ranks run (train, bench) with <paramref name="args"/>.</param>
    public static int Run(string command, int nproc, IReadOnlyList<string> args, TextWriter stdout, TextWriter stderr)
    {
        var port = FreePort();
        var gate = new Lock();
        var children = Enumerable.Range(0, nproc).Select(r => new Child(new RankInfo(r, nproc, r, "127.0.0.1", port), [command, .. args], stdout, stderr, gate)).ToArray();
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx =>
        {
            ctx.Cancel = true;
            foreach (var c in children) c.Signal(15);
        });
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, ctx => ctx.Cancel = true);   // the ranks got it too: wait for their checkpoint
        try
        {
            foreach (var c in children) c.Start();
            Supervise(children);
        }
        finally
        {
            foreach (var c in children) c.Kill();
        }
        var (code, error) = Outcome([.. children.Select(c => c.Result())]);
        if (error != null)
        {
            lock (gate) stderr.WriteLine(error);
        }
        return code;
    }

    /// <summary>Waits for every rank; once one failed, the others get <see cref="Grace"/>, then are killed.</summary>
    private static void Supervise(Child[] children)
    {
        var failedAt = (DateTime?)null;
        while (children.Any(c => !c.Done))
        {
            Thread.Sleep(50);
            if (failedAt == null && children.Any(c => c.Done && c.Code != 0)) failedAt = DateTime.UtcNow;
            if (failedAt + Grace < DateTime.UtcNow) foreach (var c in children) c.Kill();
        }
        foreach (var c in children) c.WaitForOutput();
    }

    /// <summary>
    /// The exit code and the one `error:` line of a group: none when every rank exited 0, or when all exited alike
    /// without a message (a stop by a signal, checkpointed). Otherwise the first failure that blames no other rank
    /// ("rank R failed/stopped: …" is a consequence), with its code: its own message, or how it ended.
    /// </summary>
    public static (int Code, string? Error) Outcome(IReadOnlyList<Exit> ranks)
    {
        var failed = ranks.Where(r => r.Code != 0).OrderBy(r => r.Order).ToArray();
        if (failed.Length == 0) return (0, null);
        if (failed.Length == ranks.Count && ranks.All(r => r.Error == null && r.Code == failed[0].Code)) return (failed[0].Code, null);
        var root = failed.FirstOrDefault(r => r.Error is null || !Blames().IsMatch(r.Error)) ?? failed[0];
        var others = ranks.Count > 1 ? "; the other ranks stopped with it" : "";
        var line = root.Error switch
        {
            null when root.Code > 128 => $"error: rank {root.Rank} was killed by signal {root.Code - 128}{others}",
            null => $"error: rank {root.Rank} exited with code {root.Code} without an error message{others}",
            var e when e.StartsWith("rank ", StringComparison.Ordinal) => $"error: {e}",                     // it names its rank already
            var e => $"error: rank {root.Rank}: {e}",
        };
        return (root.Code, line);
    }

    /// <summary>A rank's message about another rank's failure (the collective's wording).</summary>
    [GeneratedRegex(@"^rank \d+ (failed|stopped)\b")]
    private static partial Regex Blames();

    private static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        var port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    /// <summary>kill(2): passes a signal on to a rank.</summary>
    [DllImport("libc", EntryPoint = "kill")]
    private static extern int SendSignal(int pid, int signal);

    /// <summary>One rank's process and what it said.</summary>
    private sealed class Child(RankInfo me, IReadOnlyList<string> args, TextWriter stdout, TextWriter stderr, Lock gate)
    {
        private static int _exits;
        private readonly Process _p = new() { StartInfo = Info(me, args), EnableRaisingEvents = true };
        private volatile bool _done;
        private int _order = int.MaxValue;
        private string? _error;

        public bool Done => _done;
        public int Code => _p.ExitCode;

        public void Start()
        {
            _p.OutputDataReceived += (_, e) => Forward(stdout, e.Data);
            _p.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is { } line && line.StartsWith("error: ", StringComparison.Ordinal))
                {
                    Interlocked.CompareExchange(ref _error, line["error: ".Length..], null);
                    return;
                }
                Forward(stderr, e.Data);
            };
            _p.Exited += (_, _) =>
            {
                _order = Interlocked.Increment(ref _exits);
                _done = true;
            };
            _p.Start();
            _p.BeginOutputReadLine();
            _p.BeginErrorReadLine();
        }

        private void Forward(TextWriter to, string? line)
        {
            if (line == null) return;
            lock (gate) to.WriteLine(me.Rank == 0 ? line : $"[rank {me.Rank}] {line}");
        }

        public void Signal(int signal)
        {
            if (!_done) _ = SendSignal(_p.Id, signal);
        }

        public void Kill()
        {
            try
            {
                if (!_done) _p.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // it was never started, or has just exited
            }
        }

        public void WaitForOutput() => _p.WaitForExit();

        public Exit Result() => new(me.Rank, _p.ExitCode, _error, _order);

        private static ProcessStartInfo Info(RankInfo me, IReadOnlyList<string> args)
        {
            var self = Environment.ProcessPath!;
            var psi = new ProcessStartInfo(self) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            var cli = typeof(Commands).Assembly.Location;
            if (Path.GetFileNameWithoutExtension(self) != Path.GetFileNameWithoutExtension(cli)) psi.ArgumentList.Add(cli);   // `dotnet MixLoRA.Cli.dll`
            foreach (var a in args) psi.ArgumentList.Add(a);
            foreach (var (k, v) in me.Variables()) psi.Environment[k] = v;
            psi.Environment.Remove(DistributedSettings.AgentStoreVar);                       // the port is ours, not a torchrun agent's
            return psi;
        }
    }

    /// <summary>The arguments without --nproc and its value (both spellings).</summary>
    public static string[] Without(IReadOnlyList<string> args, string option)
    {
        var kept = new List<string>();
        for (var i = 0; i < args.Count; i++)
        {
            if (args[i] == option)
            {
                i++;
                continue;
            }
            if (!args[i].StartsWith(option + "=", StringComparison.Ordinal)) kept.Add(args[i]);
        }
        return [.. kept];
    }
}
