using System.Globalization;
using System.Text;
using System.Text.Json;
using MixLoRA.GraphBuilder.IO;

namespace MixLoRA.GraphBuilder.Adapters;

public sealed partial record AdapterConfig
{
    /// <summary>
    /// The reference adapter_config.json text: its key order, 2-space indent and Python's number
    /// spelling (<c>0.0</c>, <c>1e-05</c>), so the authors' tools and PEFT-style readers load it.
    /// </summary>
    public string ToJson()
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("bias", "none");
            w.WriteString("peft_type", PeftType);
            w.WriteString("task_type", TaskType);
            if (BaseModel is null) w.WriteNull("base_model_name_or_path");
            else w.WriteString("base_model_name_or_path", BaseModel);
            WriteLora(w, Lora, withTargets: true);
            if (IsMixLora) WriteMixLora(w);
            if (IsRoutedLinear) WriteRoutedLinear(w);
            w.WriteBoolean("use_rslora", UseRsLora);
            w.WriteBoolean("use_dora", UseDora);
            if (LoraInit != "original") w.WriteString("lora_init", LoraInit);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    /// <summary>Writes <c>adapter_config.json</c> into <paramref name="dir"/> atomically.</summary>
    public void Save(string dir) => AtomicFile.WriteAllText(Path.Combine(dir, FileName), ToJson());

    private void WriteLora(Utf8JsonWriter w, LoraSettings s, bool withTargets)
    {
        w.WriteNumber("r", s.R);
        w.WritePropertyName("lora_alpha");
        w.WriteRawValue(s.LoraAlpha == Math.Floor(s.LoraAlpha) && Math.Abs(s.LoraAlpha) < 1e15
            ? ((long)s.LoraAlpha).ToString(CultureInfo.InvariantCulture)
            : PyFloat(s.LoraAlpha));
        w.WritePropertyName("lora_dropout");
        w.WriteRawValue(PyFloat(s.LoraDropout));
        if (!withTargets) return;
        w.WriteStartArray("target_modules");
        foreach (var t in TargetModules) w.WriteStringValue(t);
        w.WriteEndArray();
    }

    private void WriteMixLora(Utf8JsonWriter w)
    {
        w.WriteString("routing_strategy", RoutingStrategy);
        w.WriteNumber("num_experts", NumExperts);
        if (RoutingStrategy == "mixlora-dynamic")
        {
            w.WritePropertyName("top_p");
            w.WriteRawValue(PyFloat(TopP));
            w.WritePropertyName("temperature");
            w.WriteRawValue(PyFloat(Temperature));
        }
        else if (!IsSwitch) w.WriteNumber("top_k", TopK);
        if (ActFn != null) w.WriteString("act_fn", ActFn);
        if (IsSwitch) WriteSwitch(w);
        foreach (var (k, v) in new[] { ("router_aux_loss_coef", RouterAuxLossCoef), ("router_init_range", RouterInitRange), ("jitter_noise", JitterNoise) })
        {
            w.WritePropertyName(k);
            w.WriteRawValue(PyFloat(v));
        }
        if (!RouterLoss) w.WriteBoolean("router_loss", false);
        if (ExpertLora is { } e)
        {
            w.WriteStartObject("expert_lora");
            WriteLora(w, e, withTargets: false);
            w.WriteBoolean("use_rslora", e.UseRsLora);
            w.WriteBoolean("use_dora", e.UseDora);
            if (e.LoraInit != "original") w.WriteString("lora_init", e.LoraInit);
            w.WriteEndObject();
        }
    }

    /// <summary>mixlora-switch's keys (MoE-PEFT writes expert_capacity and sparse_step; the others too, so that they load back).</summary>
    private void WriteSwitch(Utf8JsonWriter w)
    {
        w.WriteNumber("expert_capacity", ExpertCapacity);
        if (SparseStep is { } step) w.WriteNumber("sparse_step", step);
        else w.WriteNull("sparse_step");
        w.WritePropertyName("router_z_loss_coef");
        w.WriteRawValue(PyFloat(RouterZLossCoef));
        w.WritePropertyName("ffn_dropout");
        w.WriteRawValue(PyFloat(FfnDropout));
    }

    /// <summary>LORAMOE / MOLA / HYDRALORA: MoE-PEFT's routing_strategy and num_experts (a list as given), MoLA's top_k and loss keys, the router init.</summary>
    private void WriteRoutedLinear(Utf8JsonWriter w)
    {
        w.WriteString("routing_strategy", RoutingStrategy);
        if (ExpertsPerGroup.IsEmpty) w.WriteNumber("num_experts", NumExperts);
        else
        {
            w.WriteStartArray("num_experts");
            foreach (var n in ExpertsPerGroup) w.WriteNumberValue(n);
            w.WriteEndArray();
        }
        if (PeftType == "MOLA")
        {
            w.WriteNumber("top_k", TopK);
            w.WritePropertyName("router_aux_loss_coef");
            w.WriteRawValue(PyFloat(RouterAuxLossCoef));
            w.WriteBoolean("router_loss", RouterLoss);
        }
        w.WritePropertyName("router_init_range");
        w.WriteRawValue(PyFloat(RouterInitRange));
    }

    /// <summary>A double spelled as Python's repr: 0.0, 0.01, 1e-05, 1e+16.</summary>
    internal static string PyFloat(double v)
    {
        if (double.IsNaN(v) || double.IsInfinity(v)) throw Fail.Arg(nameof(v), v, "a finite number");
        var s = v.ToString("R", CultureInfo.InvariantCulture);
        if (Math.Abs(v) is > 0 and (< 1e-4 or >= 1e16))
        {
            // .NET's shortest round-trip digits, exponent written as Python does (e-05, e+16)
            if (!s.Contains('E')) s = v.ToString("E16", CultureInfo.InvariantCulture);
            var at = s.IndexOf('E');
            var mant = s[..at];
            if (mant.Contains('.')) mant = mant.TrimEnd('0').TrimEnd('.');
            var e = int.Parse(s[(at + 1)..], CultureInfo.InvariantCulture);
            return $"{mant}e{(e < 0 ? "-" : "+")}{Math.Abs(e):00}";
        }
        if (s.Contains('E')) s = decimal.Parse(s, NumberStyles.Float, CultureInfo.InvariantCulture).ToString(CultureInfo.InvariantCulture);
        return s.Contains('.') ? s : s + ".0";
    }
}
