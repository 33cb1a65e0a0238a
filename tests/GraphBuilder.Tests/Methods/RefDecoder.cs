namespace MixLoRA.GraphBuilder.Tests.Methods;

/// <summary>The tiny LLaMA shape the method tests use (silu, RMSNorm, RoPE θ 10000, GQA, untied head).</summary>
internal sealed record RefShape(int D = 8, int F = 12, int L = 2, int H = 2, int Kv = 1, int Dh = 4, int V = 16, double Eps = 1e-5, double Theta = 10000)
{
    public string ConfigJson() =>
        $$"""{"model_type": "llama", "hidden_size": {{D}}, "intermediate_size": {{F}}, "num_hidden_layers": {{L}}, "num_attention_heads": {{H}}, "num_key_value_heads": {{Kv}}, "head_dim": {{Dh}}, "vocab_size": {{V}}, "hidden_act": "silu", "rms_norm_eps": {{Eps}}, "rope_theta": {{Theta}}, "max_position_embeddings": 64, "tie_word_embeddings": false}""";

    /// <summary>[out, in] of a linear by module name.</summary>
    public (int Out, int In) Linear(string module) => module switch
    {
        "q_proj" => (H * Dh, D),
        "k_proj" or "v_proj" => (Kv * Dh, D),
        "o_proj" => (D, H * Dh),
        "gate_proj" or "up_proj" => (F, D),
        "down_proj" => (D, F),
        _ => throw new ArgumentException(module),
    };

    /// <summary>Every frozen weight by HF key with its shape.</summary>
    public IEnumerable<(string Key, int[] Shape)> Weights()
    {
        yield return ("model.embed_tokens.weight", [V, D]);
        for (var l = 0; l < L; l++)
        {
            yield return ($"model.layers.{l}.input_layernorm.weight", [D]);
            yield return ($"model.layers.{l}.post_attention_layernorm.weight", [D]);
            foreach (var m in new[] { "q_proj", "k_proj", "v_proj", "o_proj" }) yield return ($"model.layers.{l}.self_attn.{m}.weight", [Linear(m).Out, Linear(m).In]);
            foreach (var m in new[] { "gate_proj", "up_proj", "down_proj" }) yield return ($"model.layers.{l}.mlp.{m}.weight", [Linear(m).Out, Linear(m).In]);
        }
        yield return ("model.norm.weight", [D]);
        yield return ("lm_head.weight", [V, D]);
    }
}

/// <summary>What an adapter changes in <see cref="RefDecoder"/>: a delta on a named linear, or the whole MLP block.</summary>
internal interface IRefAdapter
{
    /// <summary>Δ (rows × out) for the linear's input rows, or null.</summary>
    double[][]? Delta(int layer, string module, double[][] x);

    /// <summary>The MLP block's output (rows × D) replacing down(silu(gate x) ⊙ up x), or null.</summary>
    double[][]? Mlp(int layer, double[][] x, Func<string, double[][], double[][]> frozen);
}

/// <summary>
/// A plain float64 LLaMA decoder over a batch (B rows of T tokens, flattened row-major), written from transformers'
/// modeling_llama with loops, no graph code: h = embed[id]; per layer h += o(attn(RoPE q, RoPE k, v)) of RMSNorm(h),
/// h += MLP(RMSNorm(h)); logits = lm_head(RMSNorm(h)). Positions 0..T−1; query i sees key j when j ≤ i and mask[j] = 1.
/// </summary>
internal sealed class RefDecoder(RefShape s, IReadOnlyDictionary<string, double[]> w)
{
    public double[][] Forward(long[] ids, long[] mask, int batch, IRefAdapter adapter)
    {
        var (n, t) = (ids.Length, ids.Length / batch);
        var h = new double[n][];
        for (var i = 0; i < n; i++) h[i] = w["model.embed_tokens.weight"].AsSpan((int)ids[i] * s.D, s.D).ToArray();
        for (var l = 0; l < s.L; l++)
        {
            var p = $"model.layers.{l}";
            var x = h.Select(r => RmsNorm(r, w[$"{p}.input_layernorm.weight"])).ToArray();
            double[][] Proj(string m, double[][] v) => Add(Frozen($"{p}.self_attn.{m}", v), adapter.Delta(l, m, v));
            var (q, k, vv) = (Proj("q_proj", x), Proj("k_proj", x), Proj("v_proj", x));
            var o = Proj("o_proj", Attention(q, k, vv, mask, batch, t));
            for (var i = 0; i < n; i++) AddTo(h[i], o[i]);
            x = h.Select(r => RmsNorm(r, w[$"{p}.post_attention_layernorm.weight"])).ToArray();
            double[][] Mlp(string m, double[][] v) => Frozen($"{p}.mlp.{m}", v);
            var y = adapter.Mlp(l, x, Mlp);
            if (y is null)
            {
                double[][] MlpProj(string m, double[][] v) => Add(Frozen($"{p}.mlp.{m}", v), adapter.Delta(l, m, v));
                var (g, u) = (MlpProj("gate_proj", x), MlpProj("up_proj", x));
                y = MlpProj("down_proj", g.Select((gr, i) => gr.Select((gv, c) => Silu(gv) * u[i][c]).ToArray()).ToArray());
            }
            for (var i = 0; i < n; i++) AddTo(h[i], y[i]);
        }
        return Frozen("lm_head", h.Select(r => RmsNorm(r, w["model.norm.weight"])).ToArray());
    }

    public static double Silu(double v) => v / (1 + Math.Exp(-v));

    /// <summary>x Wᵀ for rows x, W [out, in] under <paramref name="key"/>.weight.</summary>
    public double[][] Frozen(string key, double[][] x) => MatT(x, w[key + ".weight"]);

    /// <summary>Rows x times Wᵀ for a row-major W [out, in].</summary>
    public static double[][] MatT(double[][] x, double[] wt)
    {
        var inF = x[0].Length;
        var outF = wt.Length / inF;
        return x.Select(r =>
        {
            var y = new double[outF];
            for (var o = 0; o < outF; o++)
            {
                double acc = 0;
                for (var i = 0; i < inF; i++) acc += wt[(o * inF) + i] * r[i];
                y[o] = acc;
            }
            return y;
        }).ToArray();
    }

    public static double[][] Add(double[][] a, double[][]? b) => b is null ? a : a.Select((r, i) => r.Select((v, c) => v + b[i][c]).ToArray()).ToArray();

    private static void AddTo(double[] acc, double[] x)
    {
        for (var i = 0; i < acc.Length; i++) acc[i] += x[i];
    }

    private double[] RmsNorm(double[] x, double[] weight)
    {
        var r = 1 / Math.Sqrt((x.Sum(a => a * a) / x.Length) + s.Eps);
        return x.Select((a, i) => weight[i] * a * r).ToArray();
    }

    private double[][] Attention(double[][] q, double[][] k, double[][] v, long[] mask, int batch, int t)
    {
        var (dh, group) = (s.Dh, s.H / s.Kv);
        for (var i = 0; i < q.Length; i++)
        {
            for (var hq = 0; hq < s.H; hq++) Rope(q[i], hq * dh, i % t);
            for (var hk = 0; hk < s.Kv; hk++) Rope(k[i], hk * dh, i % t);
        }
        var outs = new double[q.Length][];
        for (var row = 0; row < batch; row++)
            for (var i = 0; i < t; i++)
            {
                var o = new double[s.H * dh];
                for (var hq = 0; hq < s.H; hq++)
                {
                    var kvh = hq / group;
                    var scores = new double[t];
                    var max = double.NegativeInfinity;
                    for (var j = 0; j < t; j++)
                    {
                        scores[j] = double.NegativeInfinity;
                        if (j > i || mask[(row * t) + j] == 0) continue;
                        double d = 0;
                        for (var c = 0; c < dh; c++) d += q[(row * t) + i][(hq * dh) + c] * k[(row * t) + j][(kvh * dh) + c];
                        scores[j] = d / Math.Sqrt(dh);
                        max = Math.Max(max, scores[j]);
                    }
                    var z = scores.Sum(a => Math.Exp(a - max));
                    for (var j = 0; j < t; j++)
                    {
                        if (double.IsNegativeInfinity(scores[j])) continue;
                        var pj = Math.Exp(scores[j] - max) / z;
                        for (var c = 0; c < dh; c++) o[(hq * dh) + c] += pj * v[(row * t) + j][(kvh * dh) + c];
                    }
                }
                outs[(row * t) + i] = o;
            }
        return outs;
    }

    /// <summary>x·cos(pos·f) + rotate_half(x)·sin(pos·f) on one head, f_i = θ^(−2i/Dh) repeated twice.</summary>
    private void Rope(double[] v, int offset, int pos)
    {
        var (dh, half) = (s.Dh, s.Dh / 2);
        var rotated = new double[dh];
        for (var c = 0; c < dh; c++)
        {
            var angle = pos / Math.Pow(s.Theta, 2.0 * (c % half) / dh);
            var partner = c < half ? -v[offset + c + half] : v[offset + c - half];
            rotated[c] = (v[offset + c] * Math.Cos(angle)) + (partner * Math.Sin(angle));
        }
        Array.Copy(rotated, 0, v, offset, dh);
    }
}
