using System.Text.Json;
using MixLoRA.GraphBuilder.Graphs;
using MixLoRA.GraphBuilder.Models;

namespace MixLoRA.Inference.Export;

/// <summary>
/// <c>genai_config.json</c> in the onnxruntime-genai decoder format (model.decoder with the IO name templates,
/// head/hidden sizes, head counts, layers; model token ids, context length, vocab, type; search defaults), so
/// onnxruntime-genai and similar hosts can run the export as they run their own model builder's output.
/// </summary>
public static class GenAiConfig
{
    public const string FileName = "genai_config.json";

    /// <summary>The JSON text; <paramref name="provider"/> is null for CPU or e.g. "cuda".</summary>
    public static string ToJson(ModelConfig cfg, string modelFile = "model.onnx", string? provider = null)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteStartObject("model");
            if (cfg.BosTokenId is { } bos) w.WriteNumber("bos_token_id", bos);
            w.WriteNumber("context_length", cfg.MaxPositionEmbeddings);
            Decoder(w, cfg, modelFile, provider);
            WriteIds(w, "eos_token_id", cfg.EosTokenIds);
            if ((cfg.PadTokenId ?? (cfg.EosTokenIds.Length > 0 ? cfg.EosTokenIds[0] : null)) is { } pad) w.WriteNumber("pad_token_id", pad);
            w.WriteString("type", cfg.ModelType);
            w.WriteNumber("vocab_size", cfg.VocabSize);
            w.WriteEndObject();
            Search(w, cfg);
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(stream.ToArray()) + "\n";
    }

    private static void Decoder(Utf8JsonWriter w, ModelConfig cfg, string modelFile, string? provider)
    {
        w.WriteStartObject("decoder");
        w.WriteStartObject("session_options");
        w.WriteString("log_id", "onnxruntime-genai");
        w.WriteStartArray("provider_options");
        if (provider != null)
        {
            w.WriteStartObject();
            w.WriteStartObject(provider);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
        w.WriteString("filename", modelFile);
        w.WriteNumber("head_size", cfg.HeadDim);
        w.WriteNumber("hidden_size", cfg.HiddenSize);
        w.WriteStartObject("inputs");
        w.WriteString("input_ids", ExportGraph.InputIds);
        w.WriteString("attention_mask", ExportGraph.AttentionMask);
        w.WriteString("position_ids", ExportGraph.PositionIds);
        w.WriteString("past_key_names", ExportGraph.PastKeyFormat);
        w.WriteString("past_value_names", ExportGraph.PastValueFormat);
        w.WriteEndObject();
        w.WriteStartObject("outputs");
        w.WriteString("logits", ExportGraph.Logits);
        w.WriteString("present_key_names", ExportGraph.PresentKeyFormat);
        w.WriteString("present_value_names", ExportGraph.PresentValueFormat);
        w.WriteEndObject();
        w.WriteNumber("num_attention_heads", cfg.NumHeads);
        w.WriteNumber("num_hidden_layers", cfg.NumLayers);
        w.WriteNumber("num_key_value_heads", cfg.NumKvHeads);
        w.WriteEndObject();
    }

    // greedy by default; the present K/V grow with each step (no shared past/present buffer)
    private static void Search(Utf8JsonWriter w, ModelConfig cfg)
    {
        w.WriteStartObject("search");
        w.WriteNumber("diversity_penalty", 0.0);
        w.WriteBoolean("do_sample", false);
        w.WriteBoolean("early_stopping", true);
        w.WriteNumber("length_penalty", 1.0);
        w.WriteNumber("max_length", cfg.MaxPositionEmbeddings);
        w.WriteNumber("min_length", 0);
        w.WriteNumber("no_repeat_ngram_size", 0);
        w.WriteNumber("num_beams", 1);
        w.WriteNumber("num_return_sequences", 1);
        w.WriteBoolean("past_present_share_buffer", false);
        w.WriteNumber("repetition_penalty", 1.0);
        w.WriteNumber("temperature", 1.0);
        w.WriteNumber("top_k", 1);
        w.WriteNumber("top_p", 1.0);
        w.WriteEndObject();
    }

    private static void WriteIds(Utf8JsonWriter w, string name, IReadOnlyList<int> ids)
    {
        if (ids.Count == 0) return;
        if (ids.Count == 1)
        {
            w.WriteNumber(name, ids[0]);
            return;
        }
        w.WriteStartArray(name);
        foreach (var id in ids) w.WriteNumberValue(id);
        w.WriteEndArray();
    }
}
