using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Autodiff;

/// <summary>
/// Activation checkpointing for one segment (a decoder layer): its forward nodes are emitted again just
/// before the segment's backward, and the segment's gradient rules read the recomputed values, so the
/// forward's intermediates die after the forward.
/// <code>
/// x_l ─ layer l (forward) ─ x_{l+1} ─ … ─ loss ─ … ─ dL/dx_{l+1} ─ 0·Σ ─┐
/// x_l ──────────────────────────────────────────────────────── (+) ─ layer l again ─ layer l's rules
/// </code>
/// The segment's entry (its first node's inputs, a layer's residual stream) is gated by 0·Σ(dL/d output), a
/// data dependency that keeps ONNX Runtime from scheduling the recomputation early or merging it with the
/// forward (common-subexpression elimination); every recomputed activation depends on it.
/// Random tensors (router jitter) are read from the forward, not drawn again.
/// Dropout is replayed from the forward's mask (kept, one byte per element): y = mask ⊙ x / (1 − p). The
/// mask has to stay consumed anyway: in a first version where the recomputation drew its own seeded masks,
/// the forward loss no longer matched the stored graph's, consistent with ORT dropping a Dropout whose mask
/// output is unused (an observation, not asserted by a test).
/// </summary>
internal sealed class Recompute
{
    private readonly Dictionary<string, string> _map = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _reverse = new(StringComparer.Ordinal);

    /// <summary>The recomputed value for a forward value of the segment (the value itself outside it).</summary>
    public string Of(string name) => _map.TryGetValue(name, out var m) ? m : name;

    /// <summary>The forward value a recomputed one stands for.</summary>
    public string Original(string name) => _reverse.TryGetValue(name, out var o) ? o : name;

    /// <summary>Re-emits nodes [start, end) of the builder, inputs from outside gated by <paramref name="dependency"/> (a zero scalar).</summary>
    public static Recompute Emit(Builder b, int start, int end, Value dependency)
    {
        var r = new Recompute();
        var inside = new HashSet<string>(StringComparer.Ordinal);
        for (var i = start; i < end; i++) foreach (var o in b.Nodes[i].Outputs) inside.Add(o);
        // the segment's entry values (the first node's inputs: a layer's residual stream) carry the gate; what
        // the recomputation reads from outside otherwise (mask bias, RoPE tables) is read as is
        var entry = b.Nodes[start].Inputs.ToHashSet(StringComparer.Ordinal);
        var gated = new Dictionary<string, Value>(StringComparer.Ordinal);
        Value? In(string name)
        {
            if (name.Length == 0) return null;
            if (r._map.TryGetValue(name, out var m)) return b.Get(m);
            var v = b.Get(name);
            if (!entry.Contains(name) || inside.Contains(name) || !v.DType.IsFloat() || b.IsInput(name) || b.ConstantOf(v) != null) return v;
            if (!gated.TryGetValue(name, out var g)) gated[name] = g = b.Add(v, b.Cast(dependency, v.DType));
            return g;
        }
        using (b.Scope("recompute"))
        {
            for (var i = start; i < end; i++)
            {
                var node = b.Nodes[i];
                if (b.ConstantOf(b.Get(node.Outputs[0])) != null) continue;                     // constants are shared
                if (node.OpType.StartsWith("Random", StringComparison.Ordinal)) continue;         // noise (router jitter) is reused, not redrawn
                if (node.OpType == "Dropout")
                {
                    r.Replay(b, node, In(node.Inputs[0])!);
                    continue;
                }
                var op = Catalog.Find(node.Key) ?? throw Fail.Bug($"op {node.Key} of node '{node.Name}' is not in the catalog");
                var outs = b.Apply(op, node.Inputs.Select(In).ToArray(), node.Attrs, outputs: node.Outputs.Length);
                for (var k = 0; k < outs.Length; k++)
                {
                    r._map[node.Outputs[k]] = outs[k].Name;
                    r._reverse[outs[k].Name] = node.Outputs[k];
                }
            }
        }
        return r;
    }

    /// <summary>Dropout again with the forward's mask: Where(mask, x / (1 − p), 0); the mask maps to itself.</summary>
    private void Replay(Builder b, Node node, Value x)
    {
        var ratio = b.ConstantOf(b.Get(node.Inputs[1]))?.AsDoubles()[0] ?? throw Fail.Bug($"Dropout '{node.Name}' needs a constant ratio to be recomputed");
        var mask = b.Get(node.Outputs[1]);                                                        // (…) bool, from the forward
        var y = b.Where(mask, b.Scale(x, 1.0 / (1.0 - ratio)), b.Scalar(0, x.DType));
        if (node.Inputs.Length > 2 && node.Inputs[2].Length > 0)
        {
            var mode = b.Get(node.Inputs[2]);                                                     // training mode: identity when off
            var fixedMode = b.ConstantOf(mode);
            y = fixedMode is null ? b.Where(mode, y, x) : fixedMode.AsDoubles()[0] != 0 ? y : x;
        }
        _map[node.Outputs[0]] = y.Name;
        _reverse[y.Name] = node.Outputs[0];
    }
}
