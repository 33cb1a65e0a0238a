using System.Security.Cryptography;
using System.Text;
using MixLoRA.Runtime.Kernels;

namespace MixLoRA.Trainer.Tests.Kernels;

/// <summary>The CUDA C++ handed to NVRTC, pinned by hash (moving the kernels' source must not change a byte of it).</summary>
[TestClass]
public sealed class CudaSourceTests
{
    [TestMethod]
    public void TheKernelSourceIsUnchanged() =>
        Assert.AreEqual("a8834326ec6d14371ace1274af8dfda8bc2bcbfce93245c66db371e9f4cd75b2",
            Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(CudaRtc.Source))));
}
