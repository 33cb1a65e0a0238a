namespace MixLoRA.Trainer.Tests.Model;

/// <summary>
/// An independent reference forward pass of a LLaMA-family decoder for one sequence, in double precision
/// with plain loops, written from the equations of transformers' modeling_llama / mistral / qwen2 / qwen3 /
/// gemma2 / gemma3 / phi3 (no graph code; what to compute comes from <see cref="NaiveSpec"/>):
/// h = embed[id] (× √hidden for Gemma); per layer h += o_proj(attn(RoPE(q), RoPE(k), v)) on RMSNorm(h), then
/// h += down(act(gate(x)) * up(x)) on x = RMSNorm(h); logits = lm_head(RMSNorm(h)) (lm_head = embed when tied).
/// Gemma: RMSNorm scales by (1 + w), the attention and MLP outputs are normed again before they are added
/// (post_attention_layernorm, post_feedforward_layernorm; the MLP's input norm is pre_feedforward_layernorm),
/// gelu-tanh gates, and Gemma 2 soft-caps the scores and the logits (cap · tanh(x / cap)). qwen3 and gemma3
/// RMSNorm each head of q and k before RoPE. phi3 stacks [q; k; v] and [gate; up] in one weight each and
/// rotates only the first rotary_dim dimensions of a head.
/// Positions are 0..T−1 (right padding); a query at i sees key j when j ≤ i, mask[j] = 1 and, with a
/// sliding window w, i − j &lt; w. Head h uses key/value head h / (heads / kv_heads) (repeat_kv).
/// </summary>
internal static class NaiveLlama
{
    /// <summary>Logits [T][V] of one row of token ids with its attention mask (a TinyModel checkpoint).</summary>
    public static double[][] Forward(TinyModel m, IReadOnlyDictionary<string, (long[] Shape, float[] Data)> w, int[] ids, int[] mask) =>
        Forward(NaiveSpec.Of(m), w, ids, mask);

    /// <summary>Logits [T][V] of one row of token ids with its attention mask.</summary>
    public static double[][] Forward(NaiveSpec m, IReadOnlyDictionary<string, (long[] Shape, float[] Data)> w, int[] ids, int[] mask)
    {
        var t = ids.Length;
        var h = new double[t][];
        for (var i = 0; i < t; i++) h[i] = Row(w["model.embed_tokens.weight"].Data, ids[i], m.Hidden).Select(x => m.Gemma ? x * Math.Sqrt(m.Hidden) : x).ToArray();
        for (var l = 0; l < m.Layers; l++)
        {
            var p = $"model.layers.{l}";
            var x = h.Select(r => Norm(m, r, w[$"{p}.input_layernorm.weight"].Data)).ToArray();
            var attn = Attention(m, w, p, x, mask, l);
            for (var i = 0; i < t; i++) Add(h[i], m.Gemma ? Norm(m, attn[i], w[$"{p}.post_attention_layernorm.weight"].Data) : attn[i]);
            for (var i = 0; i < t; i++)
            {
                var y = Norm(m, h[i], w[m.Gemma ? $"{p}.pre_feedforward_layernorm.weight" : $"{p}.post_attention_layernorm.weight"].Data);
                var mlp = Mlp(m, w, p, y);
                Add(h[i], m.Gemma ? Norm(m, mlp, w[$"{p}.post_feedforward_layernorm.weight"].Data) : mlp);
            }
        }
        var head = m.Tied ? "model.embed_tokens" : "lm_head";
        return h.Select(r => Linear(w, head, Norm(m, r, w["model.norm.weight"].Data), false).Select(z => Cap(z, m.FinalSoftcap)).ToArray()).ToArray();
    }

    /// <summary>The TinyModel's inverse frequencies (see <see cref="NaiveSpec.InvFreqOf(TinyModel)"/>).</summary>
    public static double[] InvFreq(TinyModel m) => NaiveSpec.InvFreqOf(m);

    /// <summary>down(act(gate(x)) · up(x)); phi3's gate_up_proj holds gate then up.</summary>
    private static double[] Mlp(NaiveSpec m, IReadOnlyDictionary<string, (long[] Shape, float[] Data)> w, string p, double[] y)
    {
        double[] gate, up;
        if (m.Fused)
        {
            var gu = Linear(w, $"{p}.mlp.gate_up_proj", y, false);
            (gate, up) = (gu[..(gu.Length / 2)], gu[(gu.Length / 2)..]);
        }
        else
        {
            (gate, up) = (Linear(w, $"{p}.mlp.gate_proj", y, false), Linear(w, $"{p}.mlp.up_proj", y, false));
        }
        var act = gate.Select((g, k) => Activation(m.Act, g) * up[k]).ToArray();
        return Linear(w, $"{p}.mlp.down_proj", act, false);
    }

    private static double Activation(string act, double g) => act switch
    {
        "silu" => g / (1 + Math.Exp(-g)),
        "gelu_tanh" => 0.5 * g * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (g + (0.044715 * g * g * g)))),
        _ => throw new ArgumentException(act),
    };

    private static double Cap(double x, double? cap) => cap is { } c ? c * Math.Tanh(x / c) : x;

    /// <summary>q, k, v of every position (phi3: one qkv_proj split [q; k; v]), q and k head-normed (qwen3, gemma3) and rotated.</summary>
    private static (double[][] Q, double[][] K, double[][] V) Project(NaiveSpec m, IReadOnlyDictionary<string, (long[] Shape, float[] Data)> w, string p, double[][] x, int layer)
    {
        var (qn, kn) = (m.Heads * m.HeadDim, m.KvHeads * m.HeadDim);
        double[][] q, k, v;
        if (m.Fused)
        {
            var qkv = x.Select(r => Linear(w, $"{p}.self_attn.qkv_proj", r, false)).ToArray();
            (q, k, v) = (qkv.Select(r => r[..qn]).ToArray(), qkv.Select(r => r[qn..(qn + kn)]).ToArray(), qkv.Select(r => r[(qn + kn)..]).ToArray());
        }
        else
        {
            q = x.Select(r => Linear(w, $"{p}.self_attn.q_proj", r, m.QkvBias)).ToArray();
            k = x.Select(r => Linear(w, $"{p}.self_attn.k_proj", r, m.QkvBias)).ToArray();
            v = x.Select(r => Linear(w, $"{p}.self_attn.v_proj", r, m.QkvBias)).ToArray();
        }
        for (var i = 0; i < x.Length; i++)
        {
            if (m.QkNorm)
            {
                HeadNorm(m, q[i], m.Heads, w[$"{p}.self_attn.q_norm.weight"].Data);
                HeadNorm(m, k[i], m.KvHeads, w[$"{p}.self_attn.k_norm.weight"].Data);
            }
            for (var hq = 0; hq < m.Heads; hq++) Rope(m, q[i], hq * m.HeadDim, i, m.InvFreq[layer]);
            for (var hk = 0; hk < m.KvHeads; hk++) Rope(m, k[i], hk * m.HeadDim, i, m.InvFreq[layer]);
        }
        return (q, k, v);
    }

    private static double[][] Attention(NaiveSpec m, IReadOnlyDictionary<string, (long[] Shape, float[] Data)> w, string p, double[][] x, int[] mask, int layer)
    {
        var (t, dh, group, window) = (x.Length, m.HeadDim, m.Heads / m.KvHeads, m.Windows[layer]);
        var (q, k, v) = Project(m, w, p, x, layer);
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
                    scores[j] = Cap(s * m.AttnScale, m.AttnSoftcap);
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

    /// <summary>
    /// On the first rotary_dim dimensions of one head: x·cos(pos·f)·s + rotate_half(x)·sin(pos·f)·s, rotate_half(x) = [−x₂, x₁],
    /// f repeated twice, s the rope scale (longrope's attention factor); the remaining dimensions pass through.
    /// </summary>
    private static void Rope(NaiveSpec m, double[] v, int offset, int pos, double[] inv)
    {
        var (dim, half) = (m.RotaryDim, m.RotaryDim / 2);
        var rotated = new double[dim];
        for (var c = 0; c < dim; c++)
        {
            var angle = pos * inv[c % half];
            var partner = c < half ? -v[offset + c + half] : v[offset + c - half];
            rotated[c] = ((v[offset + c] * Math.Cos(angle)) + (partner * Math.Sin(angle))) * m.RopeScale;
        }
        Array.Copy(rotated, 0, v, offset, dim);
    }

    /// <summary>RMSNorm of each head_dim slice of a row of <paramref name="heads"/> heads (one weight per dimension).</summary>
    private static void HeadNorm(NaiveSpec m, double[] row, int heads, float[] weight)
    {
        for (var h = 0; h < heads; h++)
        {
            var normed = Norm(m, row[(h * m.HeadDim)..((h + 1) * m.HeadDim)], weight);
            Array.Copy(normed, 0, row, h * m.HeadDim, m.HeadDim);
        }
    }

    /// <summary>x / √(mean(x²) + ε) · w, Gemma · (1 + w).</summary>
    private static double[] Norm(NaiveSpec m, double[] x, float[] weight)
    {
        var ms = x.Sum(a => a * a) / x.Length;
        var r = 1 / Math.Sqrt(ms + m.Eps);
        return x.Select((a, i) => (m.Gemma ? 1 + weight[i] : weight[i]) * a * r).ToArray();
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
