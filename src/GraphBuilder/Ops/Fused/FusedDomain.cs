namespace MixLoRA.GraphBuilder.Ops;

/// <summary>The ONNX domain of the trainer's fused ops (<see cref="FusedOps"/>), whose kernels only this trainer's runtime registers.</summary>
public static class FusedDomain
{
    public const string Name = "com.mixlora";
}
