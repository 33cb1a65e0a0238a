using MixLoRA.GraphBuilder.IO;

namespace MixLoRA.GraphBuilder.Models;

/// <summary>
/// Rotary-embedding frequencies of a HF config: <c>rope_theta</c> and the scaling rule
/// (<c>default</c>, <c>linear</c> with <c>factor</c>, or <c>llama3</c> with <c>factor</c>,
/// <c>low_freq_factor</c>, <c>high_freq_factor</c>, <c>original_max_position_embeddings</c>).
/// Read from <c>rope_theta</c> + <c>rope_scaling</c> (transformers 4) or <c>rope_parameters</c>
/// (transformers 5).
/// </summary>
public sealed record RopeScaling(
    string Type,
    double Theta,
    double Factor = 1.0,
    double LowFreqFactor = 1.0,
    double HighFreqFactor = 4.0,
    int OriginalMaxPositionEmbeddings = 8192)
{
    public static readonly string[] KnownTypes = ["default", "linear", "llama3", "longrope"];

    /// <summary>longrope: per-frequency divisors for sequences up to / beyond the original length (Phi-3).</summary>
    public System.Collections.Immutable.ImmutableArray<double> ShortFactor { get; init; } = [];
    public System.Collections.Immutable.ImmutableArray<double> LongFactor { get; init; } = [];

    /// <summary>cos and sin are multiplied by this (longrope: √(1 + ln(factor) / ln(original length))).</summary>
    public double AttentionFactor { get; init; } = 1.0;

    /// <summary>longrope's inverse frequencies beyond the original length (the short ones are <see cref="InvFreq"/>).</summary>
    public double[] LongInvFreq(int dim) => Type == "longrope" ? Scaled(dim, LongFactor) : InvFreq(dim);

    /// <summary>
    /// Inverse frequencies [headDim/2], computed like transformers' rope init functions, step by
    /// step in float32 as torch does (values returned widened to double):
    /// <c>inv = 1 / theta^(2i/d)</c>; linear: <c>inv / factor</c>; llama3: low frequencies
    /// (wavelength &gt; L/low) divided by factor, high ones (wavelength &lt; L/high) kept, the band
    /// between blended with <c>s = (L/wavelen − low)/(high − low)</c>: <c>(1−s)·inv/factor + s·inv</c>.
    /// </summary>
    public double[] InvFreq(int headDim)
    {
        if (headDim <= 0 || headDim % 2 != 0) throw Fail.Arg(nameof(headDim), headDim, "a positive even head dimension");
        var n = headDim / 2;
        var inv = new float[n];
        var theta = (float)Theta;
        for (var i = 0; i < n; i++)
        {
            var exponent = (float)(2 * i) / headDim;
            inv[i] = 1f / (float)Math.Pow(theta, exponent);
        }
        switch (Type)
        {
            case "default":
                break;
            case "linear":
                for (var i = 0; i < n; i++) inv[i] /= (float)Factor;
                break;
            case "llama3":
                Llama3(inv);
                break;
            case "longrope":
                return Scaled(headDim, ShortFactor);
            default:
                throw Fail.Bug($"rope type '{Type}' passed validation");
        }
        return inv.Select(f => (double)f).ToArray();
    }

    /// <summary>1 / (ext · theta^(2i/d)), in float32 as transformers' longrope init computes it.</summary>
    private double[] Scaled(int dim, System.Collections.Immutable.ImmutableArray<double> ext)
    {
        if (ext.Length != dim / 2) throw Fail.Bug($"longrope factors have {ext.Length} entries for {dim} rotary dimensions");
        var theta = (float)Theta;
        return Enumerable.Range(0, dim / 2).Select(i => (double)(1f / ((float)ext[i] * (float)Math.Pow(theta, (float)(2 * i) / dim)))).ToArray();
    }

    private void Llama3(float[] inv)
    {
        var factor = (float)Factor;
        var low = (float)LowFreqFactor;
        var high = (float)HighFreqFactor;
        float oldLen = OriginalMaxPositionEmbeddings;
        var lowWavelen = (float)(OriginalMaxPositionEmbeddings / LowFreqFactor);
        var highWavelen = (float)(OriginalMaxPositionEmbeddings / HighFreqFactor);
        var twoPi = (float)(2 * Math.PI);
        for (var i = 0; i < inv.Length; i++)
        {
            var wavelen = 1f / inv[i] * twoPi;
            var scaled = wavelen > lowWavelen ? inv[i] / factor : inv[i];
            var medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
            if (!medium)
            {
                inv[i] = scaled;
                continue;
            }
            var smooth = (oldLen / wavelen - low) / (high - low);
            inv[i] = (1 - smooth) * scaled / factor + smooth * scaled;
        }
    }

    /// <summary>Reads the rope settings of a config (either transformers generation).</summary>
    public static RopeScaling Read(JsonFields cfg, double defaultTheta)
    {
        var p5 = cfg.ObjectOpt("rope_parameters");
        return p5 != null ? ReadFrom(p5, cfg, defaultTheta) : ReadFrom(cfg.ObjectOpt("rope_scaling"), cfg, defaultTheta, cfg);
    }

    /// <summary>
    /// Reads one RoPE parameter object (transformers 5's rope_parameters, or one layer type's entry of it; or
    /// transformers 4's rope_scaling, whose theta is the config's rope_theta).
    /// </summary>
    public static RopeScaling ReadFrom(JsonFields? p, JsonFields cfg, double defaultTheta, JsonFields? thetaFrom = null)
    {
        var theta = (thetaFrom ?? p)?.DoubleOpt("rope_theta") ?? cfg.DoubleOpt("rope_theta") ?? defaultTheta;
        if (!(theta > 0)) throw ((thetaFrom ?? p) ?? cfg).Error("rope_theta", $"must be positive, got {theta}", "use the model's rope_theta, e.g. 10000");
        if (p == null) return new RopeScaling("default", theta);
        var type = p.StrOpt("rope_type") ?? p.StrOpt("type") ?? "default";
        var key = p.Has("rope_type") ? "rope_type" : "type";
        if (type == "su") type = "longrope";                                                   // Phi-3's older name
        if (!KnownTypes.Contains(type))
            throw p.Error(key, $"unsupported rope type '{type}'", "use default, linear, llama3 or longrope (other RoPE scalings are not supported)");
        return type switch
        {
            "linear" => new RopeScaling(type, theta, Positive(p, "factor")),
            "llama3" => Llama3Params(p, type, theta),
            "longrope" => LongRope(p, cfg, theta),
            _ => new RopeScaling(type, theta),
        };
    }

    /// <summary>
    /// Phi-3's longrope as transformers computes it: the factor is max_position_embeddings / the original length
    /// when the config names one, the attention factor √(1 + ln(factor) / ln(original)) unless given.
    /// </summary>
    private static RopeScaling LongRope(JsonFields p, JsonFields cfg, double theta)
    {
        double[] List(string k) => p.Get(k) is { ValueKind: System.Text.Json.JsonValueKind.Array } a
            ? a.EnumerateArray().Select(e => p.AsDouble(k, e)).ToArray()
            : throw p.Error(k, "is missing or not a list", "give longrope's short_factor and long_factor lists");
        var original = p.IntOpt("original_max_position_embeddings") ?? cfg.IntOpt("original_max_position_embeddings");
        var max = cfg.IntOpt("max_position_embeddings") ?? 4096;
        var factor = original is { } o && o > 0 ? (double)max / o : p.DoubleOpt("factor") ?? 1.0;
        var orig = original ?? max;
        var attention = p.DoubleOpt("attention_factor") ?? (factor <= 1 ? 1.0 : Math.Sqrt(1 + (Math.Log(factor) / Math.Log(orig))));
        return new RopeScaling("longrope", theta, factor, OriginalMaxPositionEmbeddings: orig)
        {
            ShortFactor = [.. List("short_factor")], LongFactor = [.. List("long_factor")], AttentionFactor = attention,
        };
    }

    private static RopeScaling Llama3Params(JsonFields p, string type, double theta)
    {
        var r = new RopeScaling(type, theta, Positive(p, "factor"), Positive(p, "low_freq_factor"),
            Positive(p, "high_freq_factor"), p.Int("original_max_position_embeddings"));
        if (r.HighFreqFactor <= r.LowFreqFactor)
            throw p.Error("high_freq_factor", $"{r.HighFreqFactor} must exceed low_freq_factor {r.LowFreqFactor}", "fix the rope scaling");
        if (r.OriginalMaxPositionEmbeddings <= 0)
            throw p.Error("original_max_position_embeddings", "must be positive", "fix the rope scaling");
        return r;
    }

    private static double Positive(JsonFields p, string key)
    {
        var v = p.Double(key);
        return v > 0 ? v : throw p.Error(key, $"must be positive, got {v}", "fix the rope scaling");
    }
}
