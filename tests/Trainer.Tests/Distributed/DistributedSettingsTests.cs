using MixLoRA.Cli.Distributed;
using MixLoRA.GraphBuilder;
using MixLoRA.Runtime.Collectives;

namespace MixLoRA.Trainer.Tests.Distributed;

/// <summary>torchrun's environment contract (read once at start-up) and the --nproc launcher's argument handling and verdict.</summary>
[TestClass]
public sealed class DistributedSettingsTests
{
    private static DistributedSettings From(params (string Key, string Value)[] vars)
    {
        var d = vars.ToDictionary(v => v.Key, v => v.Value);
        return DistributedSettings.FromEnvironment(k => d.GetValueOrDefault(k));
    }

    private static readonly (string, string)[] Torchrun = [("RANK", "3"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "node0.example"), ("MASTER_PORT", "29500")];

    [TestMethod]
    public void TorchrunsVariablesMakeARank()
    {
        var r = From(Torchrun).Resolve();
        Assert.AreEqual(new RankInfo(3, 8, 1, "node0.example", 29500), r);
        Assert.AreEqual("node0.example:29500", r!.Address);
        CollectionAssert.AreEquivalent(Torchrun.Select(t => t.Item1 + "=" + t.Item2).ToArray(), r.Variables().Select(kv => kv.Key + "=" + kv.Value).ToArray(), "what the launcher sets is what is read");
        Assert.AreEqual("[::1]:29500", (r with { MasterAddr = "::1" }).Address);
    }

    [TestMethod]
    public void UnderTorchrunsAgentStoreTheRendezvousTakesTheNextPort()
    {
        Assert.AreEqual(29501, From([.. Torchrun, ("TORCHELASTIC_USE_AGENT_STORE", "True")]).Resolve()!.MasterPort, "torchrun's store holds MASTER_PORT");
        Assert.AreEqual(29500, From([.. Torchrun, ("TORCHELASTIC_USE_AGENT_STORE", "False")]).Resolve()!.MasterPort);
    }

    [TestMethod]
    public void WithoutWorldSizeTheProcessRunsAlone()
    {
        Assert.IsNull(DistributedSettings.None.Resolve());
        Assert.IsNull(From(("RANK", "2"), ("MASTER_PORT", "1")).Resolve(), "RANK alone (set by other tools) is ignored");
        Assert.IsFalse(From(("RANK", "2")).Present);
    }

    [TestMethod]
    public void MissingOrBadVariablesAreNamed()
    {
        var missing = Assert.ThrowsExactly<UserError>(() => From(("WORLD_SIZE", "2"), ("RANK", "0")).Resolve());
        StringAssert.Contains(missing.Message, "LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not");
        var rank = Assert.ThrowsExactly<UserError>(() => From([.. Torchrun.Where(t => t.Item1 != "RANK"), ("RANK", "8")]).Resolve());
        StringAssert.Contains(rank.Message, "RANK=8 is not a whole number from 0 to 7");
        var port = Assert.ThrowsExactly<UserError>(() => From([.. Torchrun.Where(t => t.Item1 != "MASTER_PORT"), ("MASTER_PORT", "http")]).Resolve());
        StringAssert.Contains(port.Message, "MASTER_PORT=http");
    }

    [TestMethod]
    public void NprocIsTakenOutOfTheRanksArguments()
    {
        CollectionAssert.AreEqual(new[] { "--artifacts", "a", "--quiet" }, NprocLauncher.Without(["--artifacts", "a", "--nproc", "2", "--quiet"], "--nproc"));
        CollectionAssert.AreEqual(new[] { "--artifacts", "a" }, NprocLauncher.Without(["--nproc=4", "--artifacts", "a"], "--nproc"));
    }

    [TestMethod]
    public void TheLauncherReportsTheFirstFailureThatBlamesNoOtherRank()
    {
        Assert.AreEqual((0, (string?)null), NprocLauncher.Outcome([new(0, 0, null, 1), new(1, 0, null, 2)]));
        // rank 1 was killed: the others say so, and the verdict names it with its code
        var killed = NprocLauncher.Outcome([new(0, 1, "rank 1 stopped: its connection closed", 2), new(1, 137, null, 1), new(2, 1, "rank 1 stopped: its connection closed", 3)]);
        Assert.AreEqual((137, "error: rank 1 was killed by signal 9; the other ranks stopped with it"), killed);
        // rank 2 failed with its own message, which reached the others after it exited
        var failed = NprocLauncher.Outcome([new(0, 1, "rank 2 failed: disk full", 1), new(2, 1, "disk full", 2)]);
        Assert.AreEqual((1, "error: rank 2: disk full"), failed);
        // every rank refused alike (a rendezvous mismatch): the first one's
        const string Differs = "rank 1 differs from rank 0 in lr: 1 (rank 0: 2)";
        Assert.AreEqual((1, "error: " + Differs), NprocLauncher.Outcome([new(0, 1, Differs, 2), new(1, 1, Differs, 1)]));
        // a stop by a signal: every rank checkpointed and exited 143 without a message
        Assert.AreEqual((143, (string?)null), NprocLauncher.Outcome([new(0, 143, null, 1), new(1, 143, null, 2)]));
    }
}
