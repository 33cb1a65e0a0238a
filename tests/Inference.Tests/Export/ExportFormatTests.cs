using System.Text.Json;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.IO;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Onnx;
using MixLoRA.Inference.Export;
using MixLoRA.Inference.Generation;
using MixLoRA.Inference.Tests.Fixtures;

namespace MixLoRA.Inference.Tests.Export;

/// <summary>The files of an export: ONNX ops and IO, external data, genai_config.json, the ORT adapter file.</summary>
[TestClass]
public sealed class ExportFormatTests
{
    private static readonly string[] Domains = ["", "com.microsoft"];

    [TestMethod]
    public void GraphUsesStandardOpsAndTheConventionalSymbolicIo()
    {
        var cfg = ModelConfig.Load(Files.ParityModel);
        var res = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir()));
        var g = OnnxReader.Load(Path.Combine(res.OutDir, Exporter.ModelFile));

        Assert.IsTrue(g.Opsets.Keys.All(Domains.Contains), $"opset domains {string.Join(",", g.Opsets.Keys)}");
        Assert.IsLessThanOrEqualTo(23, g.Opsets[""]);
        Assert.IsTrue(g.Nodes.All(n => Domains.Contains(n.Domain)), "a node outside the ONNX and com.microsoft domains");

        // the declared IO, as ORT reads it
        using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(Path.Combine(res.OutDir, Exporter.ModelFile));
        static string Dims(Microsoft.ML.OnnxRuntime.NodeMetadata m) =>
            string.Join(",", m.Dimensions.Select((d, i) => d >= 0 ? d.ToString(System.Globalization.CultureInfo.InvariantCulture) : m.SymbolicDimensions[i]));
        var inputs = session.InputMetadata;
        Assert.AreEqual("batch,sequence_length", Dims(inputs["input_ids"]));
        Assert.AreEqual(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Int64, inputs["input_ids"].ElementDataType);
        Assert.AreEqual("batch,total_sequence_length", Dims(inputs["attention_mask"]));
        Assert.AreEqual(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Int64, inputs["attention_mask"].ElementDataType);
        Assert.AreEqual("batch,sequence_length", Dims(inputs["position_ids"]));
        Assert.AreEqual(3 + (2 * cfg.NumLayers), inputs.Count, "inputs are the IO contract only");
        for (var l = 0; l < cfg.NumLayers; l++)
        {
            Assert.AreEqual($"batch,{cfg.NumKvHeads},past_sequence_length,{cfg.HeadDim}", Dims(inputs[$"past_key_values.{l}.key"]));
            Assert.AreEqual($"batch,{cfg.NumKvHeads},past_sequence_length,{cfg.HeadDim}", Dims(inputs[$"past_key_values.{l}.value"]));
        }
        var outputs = session.OutputMetadata;
        Assert.AreEqual($"batch,sequence_length,{cfg.VocabSize}", Dims(outputs["logits"]));
        Assert.AreEqual(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float, outputs["logits"].ElementDataType);
        for (var l = 0; l < cfg.NumLayers; l++)
        {
            Assert.AreEqual($"batch,{cfg.NumKvHeads},total_sequence_length,{cfg.HeadDim}", Dims(outputs[$"present.{l}.key"]));
            Assert.AreEqual($"batch,{cfg.NumKvHeads},total_sequence_length,{cfg.HeadDim}", Dims(outputs[$"present.{l}.value"]));
        }
        Assert.AreEqual(1 + (2 * cfg.NumLayers), outputs.Count);

        // weights live in the relative external data file, not in model.onnx
        var onnxBytes = new FileInfo(Path.Combine(res.OutDir, Exporter.ModelFile)).Length;
        var dataBytes = new FileInfo(Path.Combine(res.OutDir, Exporter.DataFile)).Length;
        using var st = new SafetensorsModel(Files.ParityModel);
        var weightBytes = st.Names.Sum(n => st.Info(n).ByteLength);
        Assert.IsGreaterThanOrEqualTo(weightBytes * 9 / 10, dataBytes);
        Assert.IsLessThan(weightBytes / 10, onnxBytes);
        Assert.DoesNotContain(Path.GetTempPath(), File.ReadAllText(Path.Combine(res.OutDir, Exporter.ModelFile)), "the data location is relative");
    }

    [TestMethod]
    public void FolderHoldsGenAiConfigConfigAndModelFiles()
    {
        var cfg = ModelConfig.Load(Files.ParityModel);
        var res = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir()));
        foreach (var f in new[] { "model.onnx", "model.onnx.data", "genai_config.json", "config.json", "generation_config.json" })
            Assert.IsTrue(File.Exists(Path.Combine(res.OutDir, f)), f);
        Assert.AreEqual(File.ReadAllText(Path.Combine(Files.ParityModel, "config.json")), File.ReadAllText(Path.Combine(res.OutDir, "config.json")));

        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(res.OutDir, "genai_config.json")));
        var model = doc.RootElement.GetProperty("model");
        var dec = model.GetProperty("decoder");
        Assert.AreEqual("model.onnx", dec.GetProperty("filename").GetString());
        Assert.AreEqual(cfg.HeadDim, dec.GetProperty("head_size").GetInt32());
        Assert.AreEqual(cfg.HiddenSize, dec.GetProperty("hidden_size").GetInt32());
        Assert.AreEqual(cfg.NumHeads, dec.GetProperty("num_attention_heads").GetInt32());
        Assert.AreEqual(cfg.NumKvHeads, dec.GetProperty("num_key_value_heads").GetInt32());
        Assert.AreEqual(cfg.NumLayers, dec.GetProperty("num_hidden_layers").GetInt32());
        Assert.AreEqual("past_key_values.%d.key", dec.GetProperty("inputs").GetProperty("past_key_names").GetString());
        Assert.AreEqual("past_key_values.%d.value", dec.GetProperty("inputs").GetProperty("past_value_names").GetString());
        Assert.AreEqual("present.%d.key", dec.GetProperty("outputs").GetProperty("present_key_names").GetString());
        Assert.AreEqual("present.%d.value", dec.GetProperty("outputs").GetProperty("present_value_names").GetString());
        Assert.AreEqual("logits", dec.GetProperty("outputs").GetProperty("logits").GetString());
        Assert.AreEqual(JsonValueKind.Array, dec.GetProperty("session_options").GetProperty("provider_options").ValueKind);
        // values from the model's own config.json, read independently
        using var hf = JsonDocument.Parse(File.ReadAllText(Path.Combine(Files.ParityModel, "config.json")));
        Assert.AreEqual(hf.RootElement.GetProperty("bos_token_id").GetInt32(), model.GetProperty("bos_token_id").GetInt32());
        Assert.AreEqual(hf.RootElement.GetProperty("eos_token_id").GetInt32(), model.GetProperty("eos_token_id").GetInt32());
        Assert.AreEqual(hf.RootElement.GetProperty("pad_token_id").GetInt32(), model.GetProperty("pad_token_id").GetInt32());
        Assert.AreEqual(hf.RootElement.GetProperty("vocab_size").GetInt32(), model.GetProperty("vocab_size").GetInt32());
        Assert.AreEqual(hf.RootElement.GetProperty("max_position_embeddings").GetInt32(), model.GetProperty("context_length").GetInt32());
        Assert.AreEqual(hf.RootElement.GetProperty("model_type").GetString(), model.GetProperty("type").GetString());
        var search = doc.RootElement.GetProperty("search");
        Assert.IsFalse(search.GetProperty("do_sample").GetBoolean());
        Assert.IsFalse(search.GetProperty("past_present_share_buffer").GetBoolean());
    }

    [TestMethod]
    public void AdapterFileRoundTripsThroughOurReader()
    {
        var rng = new Random(3);
        var tensors = new List<TensorData>
        {
            new("a.lora_A", DType.Float32, [3, 5], Enumerable.Range(0, 60).Select(_ => (byte)rng.Next(256)).ToArray()),
            new("b.lora_B.weight", DType.Float16, [7], Enumerable.Range(0, 14).Select(_ => (byte)rng.Next(256)).ToArray()),
            new("scalar", DType.Float32, [], new byte[4]),
        };
        var path = Path.Combine(Files.TempDir(), "x.onnx_adapter");
        OnnxAdapterFile.Write(path, tensors, adapterVersion: 3, modelVersion: 5);
        var back = OnnxAdapterFile.Read(path);
        Assert.AreEqual((1, 3, 5), (back.FormatVersion, back.AdapterVersion, back.ModelVersion));
        Assert.HasCount(tensors.Count, back.Parameters);
        var bytes = File.ReadAllBytes(path);
        Assert.AreEqual("TORT", System.Text.Encoding.ASCII.GetString(bytes, 4, 4));
        for (var i = 0; i < tensors.Count; i++)
        {
            Assert.AreEqual(tensors[i].Name, back.Parameters[i].Name);
            Assert.AreEqual(tensors[i].DType, back.Parameters[i].DType);
            CollectionAssert.AreEqual(tensors[i].Dims.ToArray(), back.Parameters[i].Dims.ToArray());
            CollectionAssert.AreEqual(tensors[i].Bytes.ToArray(), back.Parameters[i].Bytes.ToArray());
            var at = bytes.AsSpan().IndexOf(tensors[i].Bytes.Span);
            if (tensors[i].Bytes.Length > 0 && tensors[i].Bytes.Span.ContainsAnyExcept((byte)0)) Assert.AreEqual(0, at % 8, $"raw data of {tensors[i].Name} is 8-aligned");
        }
    }

    [TestMethod]
    public void OrtLoadsTheAdapterFileAndItOverridesTheAdapterTensors()
    {
        var cfg = ModelConfig.Load(Files.ParityModel);
        string[] modules = ["q_proj"];
        var (dirX, _) = TestLora.WriteAdapter(cfg, 4, 8, 11, modules);
        var (dirY, _) = TestLora.WriteAdapter(cfg, 4, 8, 12, modules);
        var shared = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir()) { AdapterDir = dirX, OnnxAdapter = true });
        var bakedY = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir()) { AdapterDir = dirY });
        var ySide = Exporter.Export(new ExportOptions(Files.ParityModel, Files.TempDir()) { AdapterDir = dirY, OnnxAdapter = true });
        var keyA = AttentionMerge.LoraKey(GraphBuilder.Adapters.AdapterConfig.Load(dirX), 0, "q_proj", 'A');
        Assert.IsTrue(shared.Graph.Inputs.Any(v => v.Name == keyA) && shared.Graph.Initializers.Any(t => t.Name == keyA), "adapter tensors are inputs with initializers");
        Assert.IsTrue(OnnxAdapterFile.Read(Path.Combine(ySide.OutDir, Exporter.AdapterFile)).Parameters.Any(t => t.Name == keyA));
        var yFile = Path.Combine(ySide.OutDir, Exporter.AdapterFile);

        long[] ids = [1, 17, 42, 99, 3, 250, 7, 8];
        long[] mask = Enumerable.Repeat(1L, ids.Length).ToArray();
        float[] Run(string dir, string? lora)
        {
            using var m = new ExportedModel(dir, onnxAdapter: lora);
            return ExportParityTests.FullForward(m, ids, mask, 1);
        }
        var xDefault = Run(shared.OutDir, null);
        var xWithY = Run(shared.OutDir, yFile);
        var yBaked = Run(bakedY.OutDir, null);
        var v = cfg.VocabSize;
        Assert.IsGreaterThan(1e-3, Reference.MaxRelAtRealTokens(yBaked, xDefault, mask, v), "the two adapters give different logits");
        Assert.IsLessThanOrEqualTo(1e-6, Reference.MaxRelAtRealTokens(yBaked, xWithY, mask, v), "ORT's active LoRA adapter replaces the defaults");
    }
}
