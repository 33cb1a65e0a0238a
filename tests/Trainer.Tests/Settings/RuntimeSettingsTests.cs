using Microsoft.ML.OnnxRuntime;
using MixLoRA.Runtime;

namespace MixLoRA.Trainer.Tests.Settings;

/// <summary>The MIXLORA_* variables, read in one place into one record.</summary>
[TestClass]
public sealed class RuntimeSettingsTests
{
    [TestMethod]
    public void TheVariablesMapToTheRecord()
    {
        var env = new Dictionary<string, string>
        {
            ["MIXLORA_ORT_OPT"] = "basic", ["MIXLORA_ORT_LOG"] = "0", ["MIXLORA_ORT_THREADS"] = "3", ["MIXLORA_STRICT_PLACEMENT"] = "1",
            ["MIXLORA_CUDA_OPTIONS"] = "a=1;b=x=y", ["MIXLORA_MEM_PATTERN"] = "1", ["MIXLORA_DEBUG"] = "1", ["MIXLORA_BISECT_SKIP"] = "Gemm,Cast",
        };
        var s = RuntimeSettings.FromEnvironment(k => env.GetValueOrDefault(k));
        Assert.AreEqual(GraphOptimizationLevel.ORT_ENABLE_BASIC, s.OptimizationLevel);
        Assert.AreEqual(OrtLoggingLevel.ORT_LOGGING_LEVEL_VERBOSE, s.LogLevel);
        Assert.AreEqual(3, s.IntraOpThreads);
        Assert.IsTrue(s.StrictPlacement && s.MemoryPattern && s.Debug);
        Assert.AreEqual("x=y", s.CudaOptions!["b"]);
        Assert.IsTrue(s.BisectSkip.SetEquals(["Gemm", "Cast"]));
        var none = RuntimeSettings.FromEnvironment(_ => null);
        Assert.AreEqual(GraphOptimizationLevel.ORT_ENABLE_ALL, none.OptimizationLevel);
        Assert.AreEqual(OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR, none.LogLevel);
        Assert.IsTrue(none.IntraOpThreads is null && none.CudaOptions is null && !none.StrictPlacement && !none.MemoryPattern && !none.Debug && none.BisectSkip.Count == 0);
        using var o = OrtRuntime.For(Device.Cpu, s with { OptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL }).Options();
        Assert.AreEqual(GraphOptimizationLevel.ORT_DISABLE_ALL, o.GraphOptimizationLevel);
        Assert.AreEqual(3, o.IntraOpNumThreads);
    }
}
