using Microsoft.ML.OnnxRuntime;

namespace MixLoRA.Trainer.Distributed;

/// <summary>
/// How a process takes part in an optimizer step that several processes share (<see cref="Training.StepRunner.Step"/>):
/// which of the step's micro-batches it runs, and the sum over all processes of what they computed, before the
/// optimizer runs on every process alike.
/// </summary>
public interface IStepShare
{
    /// <summary>The indices (in the step's order) of the micro-batches of a step of <paramref name="count"/> that this process runs.</summary>
    IReadOnlyList<int> Mine(int count);

    /// <summary>
    /// After this process's micro-batches: sums the flat gradient buffer (<paramref name="count"/> fp32 elements;
    /// <paramref name="none"/>: this process ran none, its part is zero), the loss sums (loss, lm, aux, valid tokens)
    /// and the router load over all processes, in place.
    /// </summary>
    void Reduce(OrtValue grads, long count, bool none, double[] sums, double[,]? load);
}
