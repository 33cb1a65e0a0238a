using MixLoRA.GraphBuilder.Optim;

namespace MixLoRA.GraphBuilder.Tests.Optim;

[TestClass]
public sealed class LrScheduleTests
{
    // Line-by-line transcriptions of transformers/optimization.py (the lr_lambda helpers), float arithmetic as in Python.
    private static double HfConstantWithWarmup(long step, long warmup) =>
        step < warmup ? step / (double)Math.Max(1.0, warmup) : 1.0;

    private static double HfLinear(long step, long warmup, long total) =>
        step < warmup ? step / (double)Math.Max(1, warmup) : Math.Max(0.0, (total - step) / (double)Math.Max(1, total - warmup));

    private static double HfCosine(long step, long warmup, long total, double numCycles = 0.5)
    {
        if (step < warmup) return step / (double)Math.Max(1, warmup);
        var progress = (step - warmup) / (double)Math.Max(1, total - warmup);
        return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * numCycles * 2.0 * progress)));
    }

    [TestMethod]
    public void AllStepsMatchTheHfLambdas()
    {
        const double peak = 3e-4;
        foreach (var (warmup, total) in new[] { (0L, 50L), (7L, 50L), (10L, 11L), (5L, 5L) })
        {
            var constant = new LrSchedule(LrScheduleKind.Constant, peak, warmup, total).Validate();
            var linear = new LrSchedule(LrScheduleKind.Linear, peak, warmup, total).Validate();
            var cosine = new LrSchedule(LrScheduleKind.Cosine, peak, warmup, total).Validate();
            for (long k = 0; k < total + 5; k++)
            {
                Assert.AreEqual(peak * HfConstantWithWarmup(k, warmup), constant.At(k), 1e-18, $"constant w={warmup} k={k}");
                Assert.AreEqual(peak * HfLinear(k, warmup, total), linear.At(k), 1e-18, $"linear w={warmup} T={total} k={k}");
                Assert.AreEqual(peak * HfCosine(k, warmup, total), cosine.At(k), 1e-18, $"cosine w={warmup} T={total} k={k}");
            }
        }
    }

    [TestMethod]
    public void HandComputedPoints()
    {
        // warmup 10, total 110: decay spans 100 steps
        var lin = new LrSchedule(LrScheduleKind.Linear, 1e-3, 10, 110);
        var cos = new LrSchedule(LrScheduleKind.Cosine, 1e-3, 10, 110);
        var con = new LrSchedule(LrScheduleKind.Constant, 1e-3, 10);
        Assert.AreEqual(0.0, lin.At(0));                      // warmup starts at 0
        Assert.AreEqual(5e-4, lin.At(5), 1e-18);              // 5/10
        Assert.AreEqual(1e-3, lin.At(10), 1e-18);             // peak right after warmup
        Assert.AreEqual(2.5e-4, lin.At(85), 1e-18);           // (110−85)/100
        Assert.AreEqual(0.0, lin.At(110));                    // end of decay
        Assert.AreEqual(0.0, lin.At(500));                    // clamped after the end
        Assert.AreEqual(5e-4, cos.At(60), 1e-15);             // progress ½: ½(1 + cos π/2)
        Assert.AreEqual(1e-3 * 0.5 * (1 + (Math.Sqrt(2) / 2)), cos.At(35), 1e-15); // progress ¼: cos π/4 = √2/2
        Assert.AreEqual(0.0, cos.At(110), 1e-18);             // progress 1: ½(1 + cos π)
        Assert.AreEqual(1e-3, con.At(10_000));
        Assert.AreEqual(3e-4, con.At(3), 1e-18);
        Assert.AreEqual(2e-4, new LrSchedule(LrScheduleKind.Constant, 2e-4).At(0)); // no warmup: peak from step 0
    }

    [TestMethod]
    public void NamesParseAndBadSettingsAreUserErrors()
    {
        Assert.AreEqual(LrScheduleKind.Constant, LrSchedule.ParseKind("constant_with_warmup"));
        Assert.AreEqual(LrScheduleKind.Cosine, LrSchedule.ParseKind(" Cosine "));
        Assert.AreEqual(LrScheduleKind.Linear, LrSchedule.ParseKind("linear"));
        var e = Assert.ThrowsExactly<UserError>(() => LrSchedule.ParseKind("polynomial"));
        StringAssert.Contains(e.Message, "polynomial");
        Assert.ThrowsExactly<UserError>(() => new LrSchedule(LrScheduleKind.Cosine, 1e-3, 0, 0).Validate("--lr-schedule"));
        Assert.ThrowsExactly<UserError>(() => new LrSchedule(LrScheduleKind.Constant, -1).Validate());
        Assert.ThrowsExactly<UserError>(() => new LrSchedule(LrScheduleKind.Linear, 1e-3, -2, 10).Validate());
    }
}
