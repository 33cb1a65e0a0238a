using System.Text.Json;

namespace MixLoRA.GraphBuilder.IO;

/// <summary>
/// The weights of a HF model folder: <c>model.safetensors</c>, or the shards named by
/// <c>model.safetensors.index.json</c> (weight_map: tensor name → shard file), or else every
/// <c>*.safetensors</c> in the folder. Looks tensors up by name across shards; all files stay
/// memory-mapped until Dispose.
/// </summary>
public sealed class SafetensorsModel : IDisposable
{
    private readonly List<SafetensorsFile> _files = [];
    private readonly Dictionary<string, SafetensorsFile> _byTensor = new(StringComparer.Ordinal);

    public string Folder { get; }

    public IReadOnlyList<SafetensorsFile> Files => _files;

    /// <summary>All tensor names, shard by shard in file order.</summary>
    public IEnumerable<string> Names => _files.SelectMany(f => f.Names);

    public SafetensorsModel(string folder)
    {
        Folder = folder;
        if (!Directory.Exists(folder)) throw Fail.User($"model folder not found: {folder}", "pass the folder holding config.json and *.safetensors");
        try
        {
            foreach (var path in ShardPaths(folder)) Add(new SafetensorsFile(path));
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The safetensors files that make up the model in <paramref name="folder"/>, in a stable order.</summary>
    public static IReadOnlyList<string> ShardPaths(string folder)
    {
        var index = Path.Combine(folder, "model.safetensors.index.json");
        if (File.Exists(index)) return IndexShards(index, folder);
        var single = Path.Combine(folder, "model.safetensors");
        if (File.Exists(single)) return [single];
        var all = Directory.GetFiles(folder, "*.safetensors").Order(StringComparer.Ordinal).ToArray();
        if (all.Length == 0)
            throw Fail.User($"no *.safetensors weights in {folder}", "download the model's safetensors files (model.safetensors or shards with model.safetensors.index.json)");
        return all;
    }

    private static List<string> IndexShards(string index, string folder)
    {
        var f = JsonFields.Load(index);
        var map = f.Required("weight_map");
        if (map.ValueKind != JsonValueKind.Object)
            throw f.Error("weight_map", "expected an object of tensor name → shard file", "fix or regenerate the index");
        var shards = new List<string>();
        foreach (var p in map.EnumerateObject())
        {
            var shard = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()! :
                throw f.Error($"weight_map.{p.Name}", "expected a shard file name", "fix or regenerate the index");
            if (!shards.Contains(shard)) shards.Add(shard);
        }
        var paths = shards.Select(s => Path.Combine(folder, s)).ToList();
        foreach (var p in paths.Where(p => !File.Exists(p)))
            throw Fail.InFile(index, "weight_map", $"shard '{Path.GetFileName(p)}' is missing from {folder}", "download every shard listed in the index");
        return paths;
    }

    private void Add(SafetensorsFile file)
    {
        _files.Add(file);
        foreach (var n in file.Names)
        {
            if (_byTensor.TryGetValue(n, out var other))
                throw Fail.InFile(file.Path, $"tensor '{n}'", $"also stored in {other.Path}", "remove the duplicate shard");
            _byTensor[n] = file;
        }
    }

    public bool Contains(string name) => _byTensor.ContainsKey(name);

    /// <summary>The shard holding <paramref name="name"/>.</summary>
    public SafetensorsFile FileOf(string name) =>
        _byTensor.TryGetValue(name, out var f)
            ? f
            : throw Fail.User($"tensor '{name}' is not in the model weights of {Folder}",
                "check that the checkpoint matches config.json (model type, layer count, tied embeddings)");

    public SafetensorsTensorInfo Info(string name) => FileOf(name).Info(name);

    public ReadOnlySpan<byte> Bytes(string name) => FileOf(name).Bytes(name);

    public float[] ReadFloat32(string name) => FileOf(name).ReadFloat32(name);

    public IR.TensorData ReadTensor(string name) => FileOf(name).ReadTensor(name);

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
        _files.Clear();
        _byTensor.Clear();
    }
}
