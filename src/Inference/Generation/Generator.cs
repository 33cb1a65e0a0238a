using MixLoRA.GraphBuilder;
using MixLoRA.Text.Tokenization;

namespace MixLoRA.Inference.Generation;

/// <summary>How to pick tokens: greedy when <see cref="Temperature"/> is 0, else sampling with nucleus <see cref="TopP"/>.</summary>
public sealed record SamplingOptions(int MaxNewTokens = 128, double Temperature = 0, double TopP = 1.0, int Seed = 0)
{
    public void Validate()
    {
        if (MaxNewTokens < 1) throw Fail.User($"--max-new-tokens {MaxNewTokens} is not positive", "use e.g. 128");
        if (!(Temperature >= 0)) throw Fail.User($"--temperature {Temperature} is negative", "use 0 for greedy or e.g. 0.7");
        if (!(TopP > 0 && TopP <= 1)) throw Fail.User($"--top-p {TopP} is not in (0, 1]", "use e.g. 0.9");
    }
}

/// <summary>
/// Autoregressive decoding over an <see cref="ExportedModel"/> with its KV cache: one prefill call on the prompt,
/// then one token per call; stops at EOS, at <see cref="SamplingOptions.MaxNewTokens"/> or at the context length.
/// </summary>
public sealed class Generator(ExportedModel model, ITokenizer tokenizer)
{
    /// <summary>Token ids that end generation: eos_token_id of config.json and of generation_config.json (an id or a list) and the tokenizer's EOS.</summary>
    public IReadOnlySet<int> StopIds { get; } = model.Config.EosTokenIds.Concat(GenerationEos(model.Folder)).Concat(tokenizer.EosId is { } e ? [e] : []).ToHashSet();

    private static int[] GenerationEos(string folder)
    {
        var file = Path.Combine(folder, "generation_config.json");
        return File.Exists(file) ? GraphBuilder.IO.JsonFields.Load(file).IntOrIntList("eos_token_id") : [];
    }

    /// <summary>Generates after <paramref name="prompt"/> ids; <paramref name="onToken"/> sees each new id as it is chosen.</summary>
    public IReadOnlyList<int> Generate(IReadOnlyList<int> prompt, SamplingOptions o, Action<int>? onToken = null)
    {
        o.Validate();
        if (prompt.Count == 0) throw Fail.User("the prompt encodes to no tokens", "give a non-empty --prompt");
        Fail.If(prompt.Count >= model.Config.MaxPositionEmbeddings, $"the prompt has {prompt.Count} tokens; the model's context holds {model.Config.MaxPositionEmbeddings}",
            "shorten the prompt so that at least one new token fits");
        var rng = new Random(o.Seed);
        var generated = new List<int>();
        var cache = model.EmptyCache(1);
        try
        {
            long[] ids = [.. prompt.Select(i => (long)i)];
            var position = 0;
            var limit = model.Config.MaxPositionEmbeddings;
            while (generated.Count < o.MaxNewTokens && position + ids.Length <= limit)
            {
                var positions = Enumerable.Range(position, ids.Length).Select(i => (long)i).ToArray();
                var mask = Enumerable.Repeat(1L, position + ids.Length).ToArray();
                var step = model.Forward(ids, positions, mask, 1, cache);
                cache.Dispose();
                cache = step.Cache;
                position += ids.Length;
                var next = Pick(step.Row(0, ids.Length - 1), o, rng);
                generated.Add(next);
                onToken?.Invoke(next);
                if (StopIds.Contains(next)) break;
                ids = [next];
            }
        }
        finally
        {
            cache.Dispose();
        }
        return generated;
    }

    /// <summary>Generates text, writing each decoded piece to <paramref name="output"/> as soon as it is complete.</summary>
    public string GenerateText(string prompt, SamplingOptions o, TextWriter? output = null)
    {
        var ids = tokenizer.Encode(prompt, addSpecialTokens: true);
        var mine = new List<int>();
        var printed = 0;
        var text = "";
        Generate(ids, o, id =>
        {
            if (StopIds.Contains(id)) return;
            mine.Add(id);
            text = tokenizer.Decode(mine, skipSpecialTokens: true);
            if (text.EndsWith('\uFFFD') || text.Length <= printed) return;   // a multi-byte character is still incomplete
            output?.Write(text[printed..]);
            output?.Flush();
            printed = text.Length;
        });
        if (text.Length > printed) output?.Write(text[printed..]);
        return text;
    }

    /// <summary>argmax (first of ties) when greedy; else a draw from the temperature-scaled nucleus.</summary>
    public static int Pick(ReadOnlySpan<float> logits, SamplingOptions o, Random rng)
    {
        if (o.Temperature == 0) return ArgMax(logits);
        var max = logits[ArgMax(logits)];
        var p = new double[logits.Length];
        double sum = 0;
        for (var i = 0; i < p.Length; i++) sum += p[i] = Math.Exp((logits[i] - max) / o.Temperature);
        var order = Enumerable.Range(0, p.Length).OrderByDescending(i => p[i]).ToArray();
        var kept = new List<int>();
        double mass = 0;
        foreach (var i in order)
        {
            kept.Add(i);
            mass += p[i] / sum;
            if (mass >= o.TopP) break;
        }
        var keptMass = kept.Sum(i => p[i]);
        var u = rng.NextDouble() * keptMass;
        foreach (var i in kept)
        {
            u -= p[i];
            if (u <= 0) return i;
        }
        return kept[^1];
    }

    public static int ArgMax(ReadOnlySpan<float> v)
    {
        var best = 0;
        for (var i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }
}
