using System.Text;
using System.Text.Json;
using MixLoRA.GraphBuilder.IO;

namespace MixLoRA.GraphBuilder.Models;

public sealed partial record ModelConfig
{
    /// <summary>
    /// A HF-style config.json for this architecture: transformers 5 style (<c>rope_parameters</c>)
    /// by default, or transformers 4 style (<c>rope_theta</c> + <c>rope_scaling</c>).
    /// </summary>
    public string ToJson(bool transformers4Style = false)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteStartArray("architectures");
            w.WriteStringValue(Architecture);
            w.WriteEndArray();
            w.WriteString("model_type", ModelType);
            w.WriteNumber("hidden_size", HiddenSize);
            w.WriteNumber("intermediate_size", IntermediateSize);
            w.WriteNumber("num_hidden_layers", NumLayers);
            w.WriteNumber("num_attention_heads", NumHeads);
            w.WriteNumber("num_key_value_heads", NumKvHeads);
            w.WriteNumber("head_dim", HeadDim);
            w.WriteNumber("rms_norm_eps", RmsNormEps);
            w.WriteString("hidden_act", HiddenAct);
            w.WriteNumber("vocab_size", VocabSize);
            w.WriteNumber("max_position_embeddings", MaxPositionEmbeddings);
            w.WriteBoolean("tie_word_embeddings", TieWordEmbeddings);
            WriteFamilyKeys(w);
            WriteRope(w, transformers4Style);
            WriteTokenIds(w);
            if (DType != null) w.WriteString(transformers4Style ? "torch_dtype" : "dtype", DType);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray()) + "\n";
    }

    /// <summary>Writes config.json into <paramref name="modelDir"/> atomically.</summary>
    public void Save(string modelDir, bool transformers4Style = false) =>
        AtomicFile.WriteAllText(Path.Combine(modelDir, "config.json"), ToJson(transformers4Style));

    private string Architecture => ModelType switch
    {
        "mistral" => "MistralForCausalLM",
        "qwen2" => "Qwen2ForCausalLM",
        _ => "LlamaForCausalLM",
    };

    private void WriteFamilyKeys(Utf8JsonWriter w)
    {
        switch (ModelType)
        {
            case "llama":
                if (AttentionBias != OProjBias)
                    throw Fail.Arg(nameof(OProjBias), OProjBias, "equal to AttentionBias for llama (one attention_bias key)");
                w.WriteBoolean("attention_bias", AttentionBias);
                w.WriteBoolean("mlp_bias", MlpBias);
                break;
            case "mistral":
                if (SlidingWindow is { } mw) w.WriteNumber("sliding_window", mw);
                else w.WriteNull("sliding_window");
                break;
            case "qwen2":
                w.WriteBoolean("use_sliding_window", SlidingWindow != null);
                if (SlidingWindow is { } qw)
                {
                    w.WriteNumber("sliding_window", qw);
                    var first = SlidingLayers.IndexOf(true);
                    w.WriteNumber("max_window_layers", first < 0 ? NumLayers : first);
                }
                break;
        }
    }

    private void WriteRope(Utf8JsonWriter w, bool t4)
    {
        if (t4)
        {
            w.WriteNumber("rope_theta", Rope.Theta);
            if (Rope.Type == "default")
            {
                w.WriteNull("rope_scaling");
                return;
            }
            w.WriteStartObject("rope_scaling");
        }
        else
        {
            w.WriteStartObject("rope_parameters");
            w.WriteNumber("rope_theta", Rope.Theta);
        }
        w.WriteString("rope_type", Rope.Type);
        if (Rope.Type is "linear" or "llama3") w.WriteNumber("factor", Rope.Factor);
        if (Rope.Type == "llama3")
        {
            w.WriteNumber("low_freq_factor", Rope.LowFreqFactor);
            w.WriteNumber("high_freq_factor", Rope.HighFreqFactor);
            w.WriteNumber("original_max_position_embeddings", Rope.OriginalMaxPositionEmbeddings);
        }
        w.WriteEndObject();
    }

    private void WriteTokenIds(Utf8JsonWriter w)
    {
        if (PadTokenId is { } pad) w.WriteNumber("pad_token_id", pad);
        if (BosTokenId is { } bos) w.WriteNumber("bos_token_id", bos);
        if (EosTokenIds.Length == 1) w.WriteNumber("eos_token_id", EosTokenIds[0]);
        else if (EosTokenIds.Length > 1)
        {
            w.WriteStartArray("eos_token_id");
            foreach (var e in EosTokenIds) w.WriteNumberValue(e);
            w.WriteEndArray();
        }
    }
}
