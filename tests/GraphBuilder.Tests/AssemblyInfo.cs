[assembly: Parallelize(Workers = 2, Scope = ExecutionScope.ClassLevel)]

namespace MixLoRA.GraphBuilder.Tests
{
    /// <summary>Removes this test run's temporary folders (and those of runs that died) when the assembly's tests end.</summary>
    [TestClass]
    public static class TempFolders
    {
        [AssemblyCleanup]
        public static void Remove() => MixLoRA.Tests.TestRepo.DeleteRunFolders("mixlora-tests");
    }
}
