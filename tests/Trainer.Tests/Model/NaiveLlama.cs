namespace MixLoRA.Trainer.Tests.Model;

/// <summary>
/// An independent reference forward pass of a LLaMA-family decoder for one sequence, in double precision
/// with plain loops, written from the equations of transformers' modeling_llama / modeling_mistral /
/// modeling_qwen2 (no graph code):
/// h = embed[id]; per layer h += o_proj(attn(RoPE(q), RoPE(k), v)) on RMSNorm(h), then
/// h += down(silu(gate(x)) * up(x)) on x = RMSNorm(h); logits = lm_head(RMSNorm(h)) (lm_head = embed when tied).
/// Positions are 0..T−1 (right padding); a query at i sees key j when j ≤ i, mask[j] = 1 and, with a
/// sliding window w, i − j &lt; w. Head h uses key/value head h / (heads / kv_heads) (repeat_kv).
/// </summary>
internal static class NaiveLlama
{
    /// <summary>Logits [T][V] of one row of token ids with its attention mask.</summary>
    public static double[][] Forward(TinyModel m, IReadOnlyDictionary<string, (long[] Shape, float[] Data)> w, int[] ids, int[] mask)
    {
        var t = ids.Length;
        var inv = InvFreq(m);
        var h = new double[t][];
        for (var i = 0; i < t; i++) h[i] = Row(w["model.embed_tokens.weight"].Data, ids[i], m.Hidden);
        for (var l = 0; l < m.Layers; l++)
        {
            var p = $"model.layers.{l}";
            var x = h.Select(r => RmsNorm(r, w[$"{p}.input_layernorm.weight"].Data, m.Eps)).ToArray();
            var attn = Attention(m, w, p, x, mask, inv, m.WindowOf(l));
            for (var i = 0; i < t; i++) Add(h[i], attn[i]);
            for (var i = 0; i < t; i++)
            {
                var y = RmsNorm(h[i], w[$"{p}.post_attention_layernorm.weight"].Data, m.Eps);
                var gate = Linear(w, $"{p}.mlp.gate_proj", y, false);
                var up = Linear(w, $"{p}.mlp.up_proj", y, false);
                var act = gate.Select((g, k) => g / (1 + Math.Exp(-g)) * up[k]).ToArray();
                Add(h[i], Linear(w, $"{p}.mlp.down_proj", act, false));
            }
        }
        var head = m.Tied ? "model.embed_tokens" : "lm_head";
        return h.Select(r => Linear(w, head, RmsNorm(r, w["model.norm.weight"].Data, m.Eps), false)).ToArray();
    }

    /// <summary>
    /// RoPE inverse frequencies from the formulas: 1 / θ^(2i/d); linear divides by factor; llama3 divides the
    /// low frequencies (wavelength 2π/f &gt; L/low) by factor, keeps the high ones (wavelength &lt; L/high) and
    /// blends the band between with s = (L/wavelength − low) / (high − low): (1 − s)·f/factor + s·f.
    /// </summary>
    public static double[] InvFreq(TinyModel m)
    {
        var half = m.HeadDim / 2;
        var inv = new double[half];
        for (var i = 0; i < half; i++)
        {
            var f = 1.0 / Math.Pow(m.Theta, 2.0 * i / m.HeadDim);
            inv[i] = m.RopeType switch
            {
                "default" => f,
                "linear" => f / m.Factor,
                "llama3" => Llama3(m, f),
                _ => throw new ArgumentException(m.RopeType),
            };
        }
        return inv;
    }

    private static double Llama3(TinyModel m, double f)
    {
        var wavelength = 2 * Math.PI / f;
        if (wavelength < m.OriginalMax / m.HighFreqFactor) return f;
        if (wavelength > m.OriginalMax / m.LowFreqFactor) return f / m.Factor;
        var s = ((m.OriginalMax / wavelength) - m.LowFreqFactor) / (m.HighFreqFactor - m.LowFreqFactor);
        return ((1 - s) * f / m.Factor) + (s * f);
    }

    private static double[][] Attention(TinyModel m, IReadOnlyDictionary<string, (long[] Shape, float[] Data)> w, string p,
        double[][] x, int[] mask, double[] inv, int? window)
    {
        var (t, dh, group) = (x.Length, m.HeadDim, m.Heads / m.KvHeads);
        var q = x.Select(r => Linear(w, $"{p}.self_attn.q_proj", r, m.QkvBias)).ToArray();
        var k = x.Select(r => Linear(w, $"{p}.self_attn.k_proj", r, m.QkvBias)).ToArray();
        var v = x.Select(r => Linear(w, $"{p}.self_attn.v_proj", r, m.QkvBias)).ToArray();
        for (var i = 0; i < t; i++)
        {
            for (var hq = 0; hq < m.Heads; hq++) Rope(q[i], hq * dh, dh, i, inv);
            for (var hk = 0; hk < m.KvHeads; hk++) Rope(k[i], hk * dh, dh, i, inv);
        }
        var outs = new double[t][];
        for (var i = 0; i < t; i++)
        {
            var o = new double[m.Heads * dh];
            for (var hq = 0; hq < m.Heads; hq++)
            {
                var kvh = hq / group;
                var scores = new double[t];
                var max = double.NegativeInfinity;
                for (var j = 0; j < t; j++)
                {
                    var visible = j <= i && mask[j] == 1 && (window is not { } win || i - j < win);
                    if (!visible)
                    {
                        scores[j] = double.NegativeInfinity;
                        continue;
                    }
                    double s = 0;
                    for (var c = 0; c < dh; c++) s += q[i][(hq * dh) + c] * k[j][(kvh * dh) + c];
                    scores[j] = s / Math.Sqrt(dh);
                    max = Math.Max(max, scores[j]);
                }
                if (double.IsNegativeInfinity(max)) continue;            // a padded query past the window sees nothing
                var z = scores.Sum(s => Math.Exp(s - max));
                for (var j = 0; j < t; j++)
                {
                    if (double.IsNegativeInfinity(scores[j])) continue;
                    var pj = Math.Exp(scores[j] - max) / z;
                    for (var c = 0; c < dh; c++) o[(hq * dh) + c] += pj * v[j][(kvh * dh) + c];
                }
            }
            outs[i] = Linear(w, $"{p}.self_attn.o_proj", o, m.OBias);
        }
        return outs;
    }

    /// <summary>x·cos(pos·f) + rotate_half(x)·sin(pos·f) on one head, rotate_half(x) = [−x₂, x₁], f repeated twice.</summary>
    private static void Rope(double[] v, int offset, int dh, int pos, double[] inv)
    {
        var half = dh / 2;
        var rotated = new double[dh];
        for (var c = 0; c < dh; c++)
        {
            var angle = pos * inv[c % half];
            var partner = c < half ? -v[offset + c + half] : v[offset + c - half];
            rotated[c] = (v[offset + c] * Math.Cos(angle)) + (partner * Math.Sin(angle));
        }
        Array.Copy(rotated, 0, v, offset, dh);
    }

    private static double[] RmsNorm(double[] x, float[] weight, double eps)
    {
        var ms = x.Sum(a => a * a) / x.Length;
        var r = 1 / Math.Sqrt(ms + eps);
        return x.Select((a, i) => weight[i] * a * r).ToArray();
    }

    /// <summary>y = W x (+ b) with W stored [out, in] as HF does.</summary>
    private static double[] Linear(IReadOnlyDictionary<string, (long[] Shape, float[] Data)> w, string key, double[] x, bool bias)
    {
        var (shape, data) = w[key + ".weight"];
        var (outF, inF) = ((int)shape[0], (int)shape[1]);
        if (inF != x.Length) throw new ArgumentException($"{key}: input {x.Length}, weight in {inF}");
        var y = new double[outF];
        for (var o = 0; o < outF; o++)
        {
            double s = bias ? w[key + ".bias"].Data[o] : 0;
            for (var i = 0; i < inF; i++) s += data[(o * inF) + i] * x[i];
            y[o] = s;
        }
        return y;
    }

    private static double[] Row(float[] table, int id, int width) =>
        Enumerable.Range(0, width).Select(c => (double)table[(id * width) + c]).ToArray();

    private static void Add(double[] acc, double[] x)
    {
        for (var i = 0; i < acc.Length; i++) acc[i] += x[i];
    }
}
