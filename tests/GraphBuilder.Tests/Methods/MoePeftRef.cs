namespace MixLoRA.GraphBuilder.Tests.Methods;

/// <summary>One method under test: its adapter_config keys and sizes.</summary>
internal sealed record MethodCase(string Peft, string? Strategy, int[] Experts, int TopK = 0, int R = 2, double Alpha = 3, int Capacity = 0,
    double ZCoef = 0, double AuxCoef = 0, bool RouterLoss = true)
{
    public static readonly string[] Targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    public string Prefix => Peft.ToLowerInvariant();
    public double Scaling => Alpha / R;
    public int ExpertsAt(int layer, int layers) => Experts[layer * Experts.Length / layers];

    public string ConfigJson()
    {
        var experts = Experts.Length == 1 ? $"{Experts[0]}" : $"[{string.Join(", ", Experts)}]";
        var keys = $"\"peft_type\": \"{Peft}\", \"r\": {R}, \"lora_alpha\": {Alpha}, \"lora_dropout\": 0.0, \"target_modules\": [{string.Join(", ", Targets.Select(t => $"\"{t}\""))}], \"num_experts\": {experts}";
        if (Strategy is not null) keys += $", \"routing_strategy\": \"{Strategy}\"";
        if (Strategy == "mixlora" || Peft == "MOLA") keys += $", \"top_k\": {TopK}";
        if (Peft is "MIXLORA" or "MOLA") keys += $", \"router_aux_loss_coef\": {AuxCoef}, \"router_loss\": {(RouterLoss ? "true" : "false")}";
        if (Strategy == "mixlora-switch") keys += $", \"expert_capacity\": {Capacity}, \"router_z_loss_coef\": {ZCoef}, \"jitter_noise\": 0.0";
        return "{" + keys + "}";
    }
}

/// <summary>
/// MoE-PEFT's methods (TUDB-Labs/MoE-PEFT, moe_peft/adapters/{mixlora,loramoe,mola}, common/lora_linear.py), transcribed
/// as plain float64 loops over a batch, with no graph code; dropout 0, jitter 0, inference of the router as in training.
/// LoRA: lora_forward(x) = s · B A x. MixLoRA expert e: W2' (act(W1' x) ⊙ W3' x), W' = W + s B_e A_e where targeted.
/// mixlora: softmax, top-k, renormalized; mixlora-switch: argmax, per-sequence capacity (cumsum over the sequence),
/// y = p_max · (kept ? E_e(x) : x). LoRAMoE: W x + Σ_e softmax_e s B_e A_e x. MoLA: top-k renormalized over LoRA
/// experts on every projection. HydraLoRA: W x + Σ_e softmax_e s B_e A x.
/// Losses over real tokens (mask 1; MoE-PEFT's own with an all-ones mask): mixlora and MoLA
/// coef · E · Σ_j Σ_e F[j,e] P[e] pooled over layers (MoLA: over every routed projection; a per-group expert list pools
/// each group alone, weighted by its share of projections); switch z_coef · mean lse(z)² + aux_coef · E · Σ_e F_e P_e.
/// </summary>
internal sealed class MoePeftRef(MethodCase c, RefShape s, IReadOnlyDictionary<string, double[]> p, long[] mask, int batch) : IRefAdapter
{
    private readonly List<(int Experts, double[][] Logits)> _sites = [];

    /// <summary>mixlora-switch as MoE-PEFT counts capacity, masked tokens included (to show a case depends on excluding them).</summary>
    public bool CountMaskedTokens { get; init; }

    /// <summary>mixlora-switch: real tokens over capacity in the last forward.</summary>
    public int Dropped { get; private set; }

    public int Kept { get; private set; }

    private static bool IsMlp(string m) => m is "gate_proj" or "up_proj" or "down_proj";

    private string Key(int layer, string m) => $"{c.Prefix}.layers.{layer}.{(IsMlp(m) ? "mlp" : "self_attn")}.{m}";

    public double[][]? Delta(int layer, string module, double[][] x)
    {
        var key = Key(layer, module);
        return c.Peft switch
        {
            "MIXLORA" => IsMlp(module) ? null : Lora(key, x),
            "LORAMOE" => IsMlp(module) ? Dense(key, x, c.Experts[0], shared: false) : Lora(key, x),
            "HYDRALORA" => Dense(key, x, c.Experts[0], shared: true),
            "MOLA" => Mola(key, x, c.ExpertsAt(layer, s.L)),
            _ => throw new ArgumentException(c.Peft),
        };
    }

    public double[][]? Mlp(int layer, double[][] x, Func<string, double[][], double[][]> frozen) =>
        c.Peft != "MIXLORA" ? null : c.Strategy == "mixlora-switch" ? Switch(layer, x, frozen) : Mixtral(layer, x, frozen);

    /// <summary>s · B A x per row (A [R, in], B [out, R]).</summary>
    private double[][] Lora(string key, double[][] x) => Scale(RefDecoder.MatT(RefDecoder.MatT(x, p[key + ".lora_A.weight"]), p[key + ".lora_B.weight"]), c.Scaling);

    /// <summary>LoRAMoE / HydraLoRA: Σ_e softmax(Wg x)_e · s B_e A(_e) x.</summary>
    private double[][] Dense(string key, double[][] x, int e, bool shared)
    {
        var probs = RefDecoder.MatT(x, p[key + ".moe_gate.weight"]).Select(Softmax).ToArray();
        var y = new double[x.Length][];
        for (var n = 0; n < x.Length; n++) y[n] = [];
        for (var i = 0; i < e; i++)
        {
            var a = p[shared ? key + ".lora_A.weight" : $"{key}.experts.{i}.lora_A.weight"];
            var d = Scale(RefDecoder.MatT(RefDecoder.MatT(x, a), p[$"{key}.experts.{i}.lora_B.weight"]), c.Scaling);
            for (var n = 0; n < x.Length; n++) y[n] = Accumulate(y[n], d[n], probs[n][i]);
        }
        return y;
    }

    /// <summary>MoLA: top-k of softmax(Wg x), renormalized, over LoRA experts.</summary>
    private double[][] Mola(string key, double[][] x, int e)
    {
        var logits = RefDecoder.MatT(x, p[key + ".moe_gate.weight"]);
        _sites.Add((e, logits));
        var y = new double[x.Length][];
        for (var n = 0; n < x.Length; n++)
        {
            var (top, w) = TopK(Softmax(logits[n]), c.TopK);
            y[n] = [];
            for (var j = 0; j < top.Length; j++)
            {
                var k = $"{key}.experts.{top[j]}";
                var d = Scale(RefDecoder.MatT(RefDecoder.MatT([x[n]], p[k + ".lora_A.weight"]), p[k + ".lora_B.weight"]), c.Scaling)[0];
                y[n] = Accumulate(y[n], d, w[j]);
            }
        }
        return y;
    }

    /// <summary>MixLoRA's expert e on one row: (W2 + s B2 A2)(act((W1 + s B1 A1) x) ⊙ (W3 + s B3 A3) x).</summary>
    private double[] Expert(int layer, int e, double[] x, Func<string, double[][], double[][]> frozen)
    {
        double[] Proj(string m, double[] v)
        {
            var y = frozen(m, [v])[0];
            var k = $"mixlora.layers.{layer}.mlp.{m}.experts.{e}";
            return Accumulate(y, RefDecoder.MatT(RefDecoder.MatT([v], p[k + ".lora_A.weight"]), p[k + ".lora_B.weight"])[0], c.Scaling);
        }
        var (g, u) = (Proj("gate_proj", x), Proj("up_proj", x));
        return Proj("down_proj", g.Select((gv, i) => RefDecoder.Silu(gv) * u[i]).ToArray());
    }

    private double[][] Mixtral(int layer, double[][] x, Func<string, double[][], double[][]> frozen)
    {
        var logits = RefDecoder.MatT(x, p[$"mixlora.layers.{layer}.mlp.moe_gate.weight"]);
        _sites.Add((c.Experts[0], logits));
        return x.Select((row, n) =>
        {
            var (top, w) = TopK(Softmax(logits[n]), c.TopK);
            double[] y = [];
            for (var j = 0; j < top.Length; j++) y = Accumulate(y, Expert(layer, top[j], row, frozen), w[j]);
            return y;
        }).ToArray();
    }

    /// <summary>SwitchSparseMoe.route + forward: argmax, capacity by a running count along each sequence.</summary>
    private double[][] Switch(int layer, double[][] x, Func<string, double[][], double[][]> frozen)
    {
        var logits = RefDecoder.MatT(x, p[$"mixlora.layers.{layer}.mlp.moe_gate.weight"]);
        _sites.Add((c.Experts[0], logits));
        var t = x.Length / batch;
        var y = new double[x.Length][];
        for (var row = 0; row < batch; row++)
        {
            var count = new int[c.Experts[0]];
            for (var i = 0; i < t; i++)
            {
                var n = (row * t) + i;
                var probs = Softmax(logits[n]);
                var e = Array.IndexOf(probs, probs.Max());
                if (mask[n] == 1 || CountMaskedTokens) count[e]++;
                var kept = count[e] <= c.Capacity;
                if (mask[n] == 1) (Dropped, Kept) = kept ? (Dropped, Kept + 1) : (Dropped + 1, Kept);
                y[n] = (kept ? Expert(layer, e, x[n], frozen) : x[n]).Select(v => v * probs[e]).ToArray();
            }
        }
        return y;
    }

    /// <summary>The router loss of the last forward (0 where the method has none).</summary>
    public double AuxLoss()
    {
        if (!c.RouterLoss || _sites.Count == 0) return 0;
        if (c.Strategy == "mixlora-switch") return SwitchLoss();
        var groups = _sites.GroupBy(x => x.Experts).ToArray();
        return groups.Sum(g => (double)g.Count() / _sites.Count * MixtralLoss(g.Select(x => x.Logits).ToArray(), g.Key));
    }

    private double MixtralLoss(double[][][] sites, int e)
    {
        var (f, pm) = (new double[c.TopK, e], new double[e]);
        var count = sites.Length * mask.Count(m => m == 1);
        foreach (var logits in sites)
            for (var n = 0; n < logits.Length; n++)
            {
                if (mask[n] == 0) continue;
                var probs = Softmax(logits[n]);
                var (top, _) = TopK(probs, c.TopK);
                for (var j = 0; j < c.TopK; j++) f[j, top[j]] += 1.0 / count;
                for (var i = 0; i < e; i++) pm[i] += probs[i] / count;
            }
        double sum = 0;
        for (var j = 0; j < c.TopK; j++) for (var i = 0; i < e; i++) sum += f[j, i] * pm[i];
        return c.AuxCoef * e * sum;
    }

    private double SwitchLoss()
    {
        var e = c.Experts[0];
        var (f, pm) = (new double[e], new double[e]);
        var count = _sites.Count * mask.Count(m => m == 1);
        double z = 0;
        foreach (var (_, logits) in _sites)
            for (var n = 0; n < logits.Length; n++)
            {
                if (mask[n] == 0) continue;
                var max = logits[n].Max();
                var lse = max + Math.Log(logits[n].Sum(v => Math.Exp(v - max)));
                z += lse * lse / count;
                var probs = Softmax(logits[n]);
                f[Array.IndexOf(probs, probs.Max())] += 1.0 / count;
                for (var i = 0; i < e; i++) pm[i] += probs[i] / count;
            }
        return (c.ZCoef * z) + (c.AuxCoef * e * f.Zip(pm, (a, b) => a * b).Sum());
    }

    private static double[] Softmax(double[] z)
    {
        var max = z.Max();
        var ex = z.Select(v => Math.Exp(v - max)).ToArray();
        var sum = ex.Sum();
        return ex.Select(v => v / sum).ToArray();
    }

    /// <summary>torch.topk (descending) and the weights renormalized to sum 1.</summary>
    private static (int[] Top, double[] W) TopK(double[] probs, int k)
    {
        var top = Enumerable.Range(0, probs.Length).OrderByDescending(i => probs[i]).Take(k).ToArray();
        var total = top.Sum(i => probs[i]);
        return (top, top.Select(i => probs[i] / total).ToArray());
    }

    private static double[][] Scale(double[][] x, double f) => x.Select(r => r.Select(v => v * f).ToArray()).ToArray();

    private static double[] Accumulate(double[] acc, double[] x, double w) =>
        acc.Length == 0 ? x.Select(v => v * w).ToArray() : acc.Select((v, i) => v + (w * x[i])).ToArray();
}
