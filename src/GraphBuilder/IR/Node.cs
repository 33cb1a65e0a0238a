using System.Collections.Immutable;

namespace MixLoRA.GraphBuilder.IR;

/// <summary>
/// One operator application. Inputs/outputs are value names ("" for an omitted optional input).
/// Attribute values are long, float, string, ImmutableArray&lt;long&gt;, ImmutableArray&lt;float&gt; or TensorData.
/// </summary>
public sealed record Node(
    string Name,
    string OpType,
    string Domain,
    ImmutableArray<string> Inputs,
    ImmutableArray<string> Outputs,
    ImmutableSortedDictionary<string, object> Attrs)
{
    public string Key => Domain.Length == 0 ? OpType : $"{Domain}.{OpType}";

    public long Int(string name, long fallback) => Attrs.TryGetValue(name, out var v) ? Convert.ToInt64(v, System.Globalization.CultureInfo.InvariantCulture) : fallback;
    public long Int(string name) => Attrs.TryGetValue(name, out var v) ? Convert.ToInt64(v, System.Globalization.CultureInfo.InvariantCulture) : throw Fail.Bug($"node {Name} ({OpType}) has no attribute '{name}'");
    public float Float(string name, float fallback) => Attrs.TryGetValue(name, out var v) ? Convert.ToSingle(v, System.Globalization.CultureInfo.InvariantCulture) : fallback;
    public ImmutableArray<long>? Ints(string name) => Attrs.TryGetValue(name, out var v) ? (ImmutableArray<long>)v : null;
    public string? Str(string name) => Attrs.TryGetValue(name, out var v) ? (string)v : null;

    /// <summary>Normalizes the attribute values callers pass (int, int[], long[], double, ...).</summary>
    public static ImmutableSortedDictionary<string, object> NormalizeAttrs(IEnumerable<KeyValuePair<string, object>>? attrs)
    {
        var d = ImmutableSortedDictionary.CreateBuilder<string, object>(StringComparer.Ordinal);
        foreach (var (k, v) in attrs ?? [])
        {
            d[k] = v switch
            {
                int i => (long)i,
                long l => l,
                bool bo => bo ? 1L : 0L,
                double f => (float)f,
                float f => f,
                string s => s,
                int[] a => a.Select(x => (long)x).ToImmutableArray(),
                long[] a => a.ToImmutableArray(),
                float[] a => a.ToImmutableArray(),
                ImmutableArray<long> a => a,
                ImmutableArray<float> a => a,
                TensorData t => t,
                _ => throw Fail.Arg(k, v, "an ONNX attribute value (int, float, string, int[], float[], TensorData)"),
            };
        }
        return d.ToImmutable();
    }
}
