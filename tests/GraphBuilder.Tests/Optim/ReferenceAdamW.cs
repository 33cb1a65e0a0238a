namespace MixLoRA.GraphBuilder.Tests.Optim;

/// <summary>
/// An independent float64 transcription of torch.nn.utils.clip_grad_norm_ followed by torch.optim.AdamW
/// (single-tensor path, amsgrad off), for checking the emitted graphs.
/// </summary>
public sealed class ReferenceAdamW(double beta1, double beta2, double eps, double weightDecay, double? maxNorm)
{
    public double[][] P { get; private set; } = [];
    public double[][] M { get; private set; } = [];
    public double[][] V { get; private set; } = [];
    public int Step { get; private set; }

    public void Init(double[][] parameters)
    {
        P = parameters.Select(p => (double[])p.Clone()).ToArray();
        M = parameters.Select(p => new double[p.Length]).ToArray();
        V = parameters.Select(p => new double[p.Length]).ToArray();
        Step = 0;
    }

    /// <summary>One optimizer step; returns (total norm before clipping, clip coefficient applied).</summary>
    public (double Norm, double Coef) Update(double[][] grads, double lr)
    {
        var norm = Math.Sqrt(grads.Sum(g => g.Sum(x => x * x)));
        var coef = maxNorm is { } max ? Math.Min(1.0, max / (norm + 1e-6)) : 1.0;
        Step++;
        var bc1 = 1 - Math.Pow(beta1, Step);
        var bc2 = 1 - Math.Pow(beta2, Step);
        for (var i = 0; i < P.Length; i++)
        {
            for (var k = 0; k < P[i].Length; k++)
            {
                var g = grads[i][k] * coef;
                P[i][k] *= 1 - (lr * weightDecay);
                M[i][k] = (beta1 * M[i][k]) + ((1 - beta1) * g);
                V[i][k] = (beta2 * V[i][k]) + ((1 - beta2) * g * g);
                var mHat = M[i][k] / bc1;
                var vHat = V[i][k] / bc2;
                P[i][k] -= lr * mHat / (Math.Sqrt(vHat) + eps);
            }
        }
        return (norm, coef);
    }
}
