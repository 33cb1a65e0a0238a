using System.Globalization;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Runtime.Collectives;

/// <summary>
/// The environment contract of data-parallel launchers (torchrun's): RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
/// MASTER_PORT, read once at start-up (Program.Main, beside <see cref="RuntimeSettings"/>) as raw strings and
/// checked by <see cref="Resolve"/> when a command uses them. WORLD_SIZE decides: without it the process runs alone
/// (RANK alone, as other tools set it, is ignored); with it, every other variable is required.
/// <para>torchrun (PyTorch 2.4 on) keeps its own TCP store listening on MASTER_PORT of rank 0's host and says so with
/// TORCHELASTIC_USE_AGENT_STORE=True: then the rendezvous uses MASTER_PORT + 1, the same on every rank.</para>
/// </summary>
public sealed record DistributedSettings
{
    public const string RankVar = "RANK", WorldSizeVar = "WORLD_SIZE", LocalRankVar = "LOCAL_RANK", MasterAddrVar = "MASTER_ADDR", MasterPortVar = "MASTER_PORT",
        AgentStoreVar = "TORCHELASTIC_USE_AGENT_STORE";

    public string? Rank { get; init; }
    public string? WorldSize { get; init; }
    public string? LocalRank { get; init; }
    public string? MasterAddr { get; init; }
    public string? MasterPort { get; init; }

    /// <summary>TORCHELASTIC_USE_AGENT_STORE: "True" when torchrun's agent holds MASTER_PORT.</summary>
    public string? AgentStore { get; init; }

    /// <summary>No variable set: a single process.</summary>
    public static DistributedSettings None { get; } = new();

    /// <summary>The variables of <paramref name="get"/> (default: the process environment): the one place they are read.</summary>
    public static DistributedSettings FromEnvironment(Func<string, string?>? get = null)
    {
        get ??= Environment.GetEnvironmentVariable;
        return new DistributedSettings
        {
            Rank = get(RankVar), WorldSize = get(WorldSizeVar), LocalRank = get(LocalRankVar), MasterAddr = get(MasterAddrVar), MasterPort = get(MasterPortVar),
            AgentStore = get(AgentStoreVar),
        };
    }

    /// <summary>Whether a launcher started this process as one rank of a group (WORLD_SIZE is set).</summary>
    public bool Present => !string.IsNullOrEmpty(WorldSize);

    /// <summary>This process's place in the group, or null when WORLD_SIZE is not set; a missing or bad variable is a user error naming it.</summary>
    public RankInfo? Resolve()
    {
        if (!Present) return null;
        var missing = new[] { (RankVar, Rank), (LocalRankVar, LocalRank), (MasterAddrVar, MasterAddr), (MasterPortVar, MasterPort) }
            .Where(v => string.IsNullOrWhiteSpace(v.Item2)).Select(v => v.Item1).ToArray();
        Fail.If(missing.Length > 0, $"WORLD_SIZE={WorldSize} is set but {string.Join(", ", missing)} {(missing.Length == 1 ? "is" : "are")} not",
            "a launcher (torchrun) sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT together; set all five, or none to train in one process (or use --nproc N)");
        var world = Number(WorldSizeVar, WorldSize!, 1, 1 << 16);
        var rank = Number(RankVar, Rank!, 0, world - 1);
        var local = Number(LocalRankVar, LocalRank!, 0, 1 << 16);
        var agent = AgentStore?.Trim() is "True" or "true" or "1";
        var port = Number(MasterPortVar, MasterPort!, 1, agent ? 65534 : 65535);
        return new RankInfo(rank, world, local, MasterAddr!.Trim(), agent ? port + 1 : port);   // beside torchrun's own store
    }

    private static int Number(string name, string value, int min, int max)
    {
        if (!int.TryParse(value.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n < min || n > max)
            throw Fail.User($"{name}={value} is not a whole number from {min} to {max}", $"set {name} as torchrun does (RANK < WORLD_SIZE, MASTER_PORT a TCP port)");
        return n;
    }
}

/// <summary>One process of a data-parallel group: its rank among <paramref name="WorldSize"/>, the GPU index on its host, and rank 0's rendezvous address.</summary>
public sealed record RankInfo(int Rank, int WorldSize, int LocalRank, string MasterAddr, int MasterPort)
{
    /// <summary>HOST:PORT of the rendezvous (IPv6 literals in brackets).</summary>
    public string Address => MasterAddr.Contains(':', StringComparison.Ordinal) ? $"[{MasterAddr}]:{MasterPort}" : $"{MasterAddr}:{MasterPort}";

    /// <summary>The variables that make a child process this rank (what a launcher sets).</summary>
    public IReadOnlyDictionary<string, string> Variables() => new Dictionary<string, string>(StringComparer.Ordinal)
    {
        [DistributedSettings.RankVar] = Rank.ToString(CultureInfo.InvariantCulture),
        [DistributedSettings.WorldSizeVar] = WorldSize.ToString(CultureInfo.InvariantCulture),
        [DistributedSettings.LocalRankVar] = LocalRank.ToString(CultureInfo.InvariantCulture),
        [DistributedSettings.MasterAddrVar] = MasterAddr,
        [DistributedSettings.MasterPortVar] = MasterPort.ToString(CultureInfo.InvariantCulture),
    };
}
