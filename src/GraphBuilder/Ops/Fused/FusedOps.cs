using System.Text.Json;
using System.Text.Json.Serialization;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>
/// The com.mixlora fused ops a training graph may use: the one value of the fused-kernel choice, from the CLI's
/// --no-fused-kernels (<see cref="None"/>) or its default (<see cref="All"/>: those the device has, see the
/// runtime's FusedKernels.For) through the build options, the graph spec and the manifest to the graph (export graphs never contain them).
/// </summary>
[Flags]
public enum FusedOps
{
    None = 0,

    /// <summary>MixLoRA's expert activations and slot mix (<see cref="SwiGluSlotsOps"/>).</summary>
    SwiGluSlots = 1,

    /// <summary>The loss per row (<see cref="CrossEntropyOps"/>).</summary>
    CrossEntropy = 2,

    /// <summary>Each slot's expert LoRA, gathered per slot instead of masked over all experts (<see cref="SlotLoraOps"/>).</summary>
    SlotLora = 4,

    /// <summary>The optimizer's AdamW update, one pass per chunk (<see cref="AdamWOps"/>; the optimizer graph, not the grad step).</summary>
    AdamW = 8,

    All = SwiGluSlots | CrossEntropy | SlotLora | AdamW,
}

/// <summary>
/// <see cref="FusedOps"/> as names (manifest, bench result): the one place a set becomes names and names become a set again.
/// </summary>
public static class FusedOpNames
{
    /// <summary>The single ops in <paramref name="ops"/>, by name, in flag order (empty for none).</summary>
    public static string[] Of(FusedOps ops) =>
        Enum.GetValues<FusedOps>().Where(f => f != FusedOps.None && f != FusedOps.All && ops.HasFlag(f)).Select(f => f.ToString()).ToArray();

    /// <summary>The set named by <paramref name="names"/>; null when one is not a single op's name.</summary>
    public static FusedOps? Parse(IEnumerable<string> names)
    {
        var ops = FusedOps.None;
        foreach (var n in names)
        {
            if (!Enum.TryParse<FusedOps>(n, ignoreCase: false, out var f) || f == FusedOps.None || f == FusedOps.All || !Enum.IsDefined(f)) return null;
            ops |= f;
        }
        return ops;
    }
}

/// <summary>JSON for <see cref="FusedOps"/>: an array of the single ops' names (<see cref="FusedOpNames"/>).</summary>
public sealed class FusedOpsJsonConverter : JsonConverter<FusedOps>
{
    public override FusedOps Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        var names = JsonSerializer.Deserialize<string[]>(ref reader, options) ?? [];
        return FusedOpNames.Parse(names) ?? throw Fail.Json($"unknown fused op in [{string.Join(", ", names)}]; expected names from {string.Join(", ", FusedOpNames.Of(FusedOps.All))}");
    }

    public override void Write(Utf8JsonWriter writer, FusedOps value, JsonSerializerOptions options) =>
        JsonSerializer.Serialize(writer, FusedOpNames.Of(value), options);
}
