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
    public static readonly string[] KnownTypes = ["default", "linear", "llama3"];

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
            default:
                throw Fail.Bug($"rope type '{Type}' passed validation");
        }
        return inv.Select(f => (double)f).ToArray();
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
        var p4 = cfg.ObjectOpt("rope_scaling");
        var theta = p5?.DoubleOpt("rope_theta") ?? cfg.DoubleOpt("rope_theta") ?? defaultTheta;
        if (!(theta > 0)) throw (cfg.Has("rope_theta") ? cfg : p5!).Error("rope_theta", $"must be positive, got {theta}", "use the model's rope_theta, e.g. 10000");
        var p = p5 ?? p4;
        if (p == null) return new RopeScaling("default", theta);
        var type = p.StrOpt("rope_type") ?? p.StrOpt("type") ?? "default";
        var key = p.Has("rope_type") ? "rope_type" : "type";
        if (!KnownTypes.Contains(type))
            throw p.Error(key, $"unsupported rope type '{type}'", "use default, linear or llama3 (other RoPE scalings are not supported)");
        return type switch
        {
            "linear" => new RopeScaling(type, theta, Positive(p, "factor")),
            "llama3" => Llama3Params(p, type, theta),
            _ => new RopeScaling(type, theta),
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
