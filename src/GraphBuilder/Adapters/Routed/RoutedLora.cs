using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>
/// Routed LoRA on one targeted linear (MoE-PEFT's "plugin" MoEs, and HydraLoRA). The router sees the linear's input x
/// (fp32): p = softmax(Wg x) over E. With the frozen output y = W x (+ b) and s = α/r (α/√r with rsLoRA):
/// <code>
/// LORAMOE    y + Σ_e p_e · s B_e A_e dropout(x)                    dense, every expert (MoE-PEFT's LoraMoe)
/// MOLA       y + Σ_j w_j · s B_{e_j} A_{e_j} dropout(x)            top-k of p, w renormalized to sum 1 (MolaSparseMoe)
/// HYDRALORA  y + Σ_e p_e · s B_e A dropout(x)                      one A, E B heads (HydraLoRA)
/// </code>
/// With static shapes the mixing goes into rank space: the experts' A stacked A* [E·R, in], B* [out, E·R], and
/// Δ = B* (c ⊙ A* x) with c (N, E·R) holding s·mix_e on expert e's R columns (mix = p, or Σ_j w_j [e_j = e]);
/// HydraLoRA's c ⊙ [A x, …, A x]. One GEMM pair of rank E·R, no gather. MoLA with the SlotLora kernel (CPU float32)
/// reads only each slot's expert instead: Σ_j w_j SlotLora(x)_j.
/// Keys (MoE-PEFT's; HydraLoRA ours): <c>{prefix}.layers.{l}.{self_attn|mlp}.{m}.moe_gate.weight</c> [E, in],
/// <c>….{m}.experts.{e}.lora_{A,B}.weight</c>; HydraLoRA <c>….{m}.lora_A.weight</c> and <c>….{m}.experts.{e}.lora_B.weight</c>.
/// </summary>
internal sealed class RoutedLora(AdapterConfig cfg, TrainableSet trainables, DType compute, Value? training, FusedOps fused)
{
    private readonly List<(Routing Routing, int Experts)> _routings = [];

    /// <summary>MoLA's routing decisions, one per routed projection, with the experts of each (for the pooled loss).</summary>
    public IReadOnlyList<(Routing Routing, int Experts)> Routings => _routings;

    private LoraSettings S => cfg.Lora;

    public static string Key(AdapterConfig cfg, LinearSite site) =>
        $"{cfg.KeyPrefix}.layers.{site.Layer}.{(AdapterConfig.FfnTargets.Contains(site.Module) ? "mlp" : "self_attn")}.{site.Module}";

    /// <summary>kaiming_uniform(a = √range)'s bound for fan-in <paramref name="fanIn"/>: √(6 / ((1 + range) · fan_in)).</summary>
    public static double RouterBound(double range, long fanIn) => Math.Sqrt(6 / ((1 + range) * fanIn));

    /// <summary>The routed delta (N, out) added to the frozen output of <paramref name="site"/>.</summary>
    public Value Delta(Builder b, LinearSite site, Value x, int experts)
    {
        var key = Key(cfg, site);
        var rt = Router.TypeFor(compute);
        var gate = trainables.Get(b, new TrainableTensor($"{key}.moe_gate.weight", [experts, site.In], Init.Uniform, RouterBound(cfg.RouterInitRange, site.In)), rt);
        var logits = Router.Logits(b, x, gate);                                           // (N, E)
        var xd = LoraLayer.Dropout(b, x, S.LoraDropout, training);
        switch (cfg.PeftType)
        {
            case "HYDRALORA":
                return Heads(b, key, site, xd, b.Softmax(logits, -1), experts);
            case "LORAMOE":
                return Experts(b, key, site, xd, b.Softmax(logits, -1), experts);
            default:
                var routing = Router.TopK(b, logits, cfg.TopK);
                _routings.Add((routing, experts));
                if (fused.HasFlag(FusedOps.SlotLora) && compute == DType.Float32) return Slots(b, key, site, xd, routing, experts);
                var chosen = b.Cast(b.Equal(b.Unsqueeze(routing.Experts, 2), Range(b, experts)), rt);      // (N, K, E)
                var mix = b.ReduceSum(b.Mul(chosen, b.Unsqueeze(routing.Weights, 2)), [1]);               // (N, E) Σ_j w_j [e_j = e]
                return Experts(b, key, site, xd, mix, experts);
        }
    }

    /// <summary>s B* (c ⊙ A* x) with c = mix expanded to each expert's R columns: Σ_e mix_e s B_e A_e x, (N, out).</summary>
    private Value Experts(Builder b, string key, LinearSite site, Value xd, Value mix, int e)
    {
        var a = Stacked(b, key, "lora_A", e, site.In, axis: 0);                           // (E·R, in)
        var bw = Stacked(b, key, "lora_B", e, site.Out, axis: 1);                          // (out, E·R)
        var z = b.Linear(xd, a);                                                           // (N, E·R)
        var c = b.Cast(b.MatMul(mix, Spread(b, e, S.R, S.Scaling, mix.DType)), compute);   // (N, E·R)
        return b.Linear(b.Mul(z, c), bw);                                                  // (N, out)
    }

    /// <summary>HydraLoRA: s Σ_e p_e B_e (A x) as B* applied to p_e ⊗ A x, (N, out).</summary>
    private Value Heads(Builder b, string key, LinearSite site, Value xd, Value probs, int e)
    {
        var a = trainables.Get(b, LoraLayer.A(key, S, site.In), compute);                 // (R, in), shared
        var bw = Stacked(b, key, "lora_B", e, site.Out, axis: 1);                          // (out, E·R)
        var z = b.Scale(b.Linear(xd, a), S.Scaling);                                       // (N, R)
        var zz = b.Mul(b.Unsqueeze(z, 1), b.Unsqueeze(b.Cast(probs, compute), 2));         // (N, E, R)
        return b.Linear(b.Reshape(zz, -1, e * S.R), bw);                                   // (N, out)
    }

    /// <summary>MoLA with the SlotLora kernel: Σ_j w_j s B_{e_j} A_{e_j} x reading only each slot's expert, (N, out).</summary>
    private Value Slots(Builder b, string key, LinearSite site, Value xd, Routing routing, int e)
    {
        var a = Stacked(b, key, "lora_A", e, site.In, axis: 0);                           // (E·R, in)
        var bw = Stacked(b, key, "lora_B", e, site.Out, axis: 1);                          // (out, E·R)
        var delta = b.SlotLora(xd, a, bw, routing.Experts, S.R, S.Scaling);                // (N, K, out)
        var w = b.Cast(b.Unsqueeze(routing.Weights, 2), compute);                          // (N, K, 1)
        return b.Squeeze(b.SumSlices(b.Mul(delta, w), 1, routing.Experts.S[-1].Value), 1);
    }

    /// <summary>The experts' A (rows) or B (columns) stacked in fp32 and cast once.</summary>
    private Value Stacked(Builder b, string key, string which, int e, long other, int axis)
    {
        var parts = Enumerable.Range(0, e).Select(i =>
        {
            var k = $"{key}.experts.{i}";
            return trainables.Get(b, which == "lora_A" ? LoraLayer.A(k, S, other) : LoraLayer.B(k, S, other), DType.Float32);
        }).ToArray();
        return b.Cast(b.Concat(axis, parts), compute);
    }

    /// <summary>(E, E·R): s where column c belongs to expert e (c / R = e), 0 elsewhere.</summary>
    private static Value Spread(Builder b, int e, int r, double s, DType dtype)
    {
        var m = new double[e * e * r];
        for (var i = 0; i < e; i++) for (var k = 0; k < r; k++) m[(i * e * r) + (i * r) + k] = s;
        return b.Floats(m, dtype, e, e * r);
    }

    private static Value Range(Builder b, int e) => b.Ints(Enumerable.Range(0, e).Select(i => (long)i).ToArray());
}
