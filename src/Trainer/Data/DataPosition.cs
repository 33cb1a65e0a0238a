using System.Text.Json;
using System.Text.Json.Serialization;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Trainer.Data;

/// <summary>
/// Where the batch stream stands: the next record is entry <see cref="Index"/> of epoch
/// <see cref="Epoch"/>'s order, and that order is a function of (<see cref="Seed"/>, epoch) alone.
/// Stored in checkpoints; resuming from it reproduces the stream exactly.
/// </summary>
public sealed record DataPosition(
    [property: JsonPropertyName("epoch")] long Epoch,
    [property: JsonPropertyName("index")] int Index,
    [property: JsonPropertyName("seed")] long Seed)
{
    /// <summary>The start of training with the given shuffle seed.</summary>
    public static DataPosition Start(long seed) => new(0, 0, seed);

    /// <summary>The position after <paramref name="records"/> more records of a dataset of <paramref name="count"/> records.</summary>
    public DataPosition Advance(long records, int count)
    {
        if (count <= 0) throw Fail.Arg(nameof(count), count, "a positive dataset size");
        long flat = Index + records;
        return this with { Epoch = Epoch + flat / count, Index = (int)(flat % count) };
    }

    public string ToJson() => JsonSerializer.Serialize(this);

    public static DataPosition FromJson(string json, string where = "data position")
    {
        try
        {
            return JsonSerializer.Deserialize<DataPosition>(json) ?? throw Fail.Json("null");
        }
        catch (JsonException e)
        {
            throw Fail.User($"{where} is not a valid data position ({e.Message})", "expected {\"epoch\": N, \"index\": N, \"seed\": N}");
        }
    }
}
