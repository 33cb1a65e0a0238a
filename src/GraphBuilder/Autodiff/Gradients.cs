using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Autodiff;

/// <summary>
/// Reverse-mode differentiation over the builder's nodes: walks the nodes between the parameters and the
/// scalar loss in reverse topological order, sums fan-in, emits each op's gradient rule into the same
/// builder. Only paths from the requested parameters are differentiated; integer paths are cut.
/// </summary>
public static class Gradients
{
    /// <summary>
    /// Emits d(loss)/d(p) for each p; returns parameter name → gradient value. With <paramref name="recompute"/>,
    /// each of the builder's <see cref="Segments"/> is recomputed for its backward (see <see cref="Recompute"/>).
    /// </summary>
    public static IReadOnlyDictionary<string, Value> Emit(Builder b, Value loss, IReadOnlyList<Value> parameters, Value? seed = null, bool recompute = false)
    {
        var count = b.Nodes.Count;
        var live = Between(b, b.Nodes.ToArray(), parameters.Select(p => p.Name), loss.Name);
        var grads = new Dictionary<string, List<Value>>(StringComparer.Ordinal)
        {
            [loss.Name] = [seed ?? b.Scalar(1, loss.DType)],
        };
        var segments = recompute ? b.Segments.Within(count) : [];
        var byLast = segments.ToDictionary(s => s.End - 1);                                       // walking down, a segment starts at its last node
        var firsts = segments.Select(s => s.Start).ToHashSet();
        using (b.Scope("grad"))
        {
            Recompute? rc = null;
            for (var i = count - 1; i >= 0; i--)
            {
                if (firsts.Contains(i + 1)) rc = null;                                              // left a segment
                if (byLast.TryGetValue(i, out var seg)) rc = Enter(b, seg, grads);
                var node = b.Nodes[i];
                if (!live.Contains(node.Name)) continue;
                var outGrads = node.Outputs.Select(o => Total(b, grads, o)).ToArray();
                if (outGrads.All(g => g is null)) continue;
                Apply(b, node, outGrads, live, grads, rc);
            }
            var result = new Dictionary<string, Value>(StringComparer.Ordinal);
            foreach (var p in parameters)
            {
                result[p.Name] = Total(b, grads, p.Name) ?? b.ZerosLike(p);
            }
            return result;
        }
    }

    /// <summary>The recomputation of a segment, gated on the gradient reaching its outputs (null when none does).</summary>
    private static Recompute? Enter(Builder b, (int Start, int End) seg, Dictionary<string, List<Value>> grads)
    {
        for (var i = seg.End - 1; i >= seg.Start; i--)
        {
            foreach (var o in b.Nodes[i].Outputs)
            {
                if (Total(b, grads, o) is not { } g || !g.DType.IsFloat()) continue;
                var zero = b.Mul(b.ReduceSum(b.Cast(g, DType.Float32)), b.Scalar(0, DType.Float32));   // () 0, after dL/d(output)
                return Recompute.Emit(b, seg.Start, seg.End, zero);
            }
        }
        return null;
    }

    private static void Apply(Builder b, Node node, Value?[] outGrads, HashSet<string> live, Dictionary<string, List<Value>> grads, Recompute? rc = null)
    {
        var op = Catalog.Find(node.Key) ?? throw Fail.Bug($"op {node.Key} of node '{node.Name}' is not in the catalog");
        var inputs = node.Inputs.Select(n => n.Length == 0 ? null : b.Get(rc?.Of(n) ?? n)).ToArray();
        if (op.Grad is null)
        {
            if (inputs.Where((v, k) => v != null && live.Contains("v:" + node.Inputs[k]) && v.DType.IsFloat()).Any())
            {
                var shapes = string.Join(", ", inputs.Select(v => v?.ToString() ?? "-"));
                throw Fail.Bug($"no gradient rule for {node.Key} (node '{node.Name}', inputs {shapes}): {op.NoGradReason ?? "missing rule"}");
            }
            return;
        }
        var outputs = node.Outputs.Select(o => b.Get(rc?.Of(o) ?? o)).ToArray();
        var ctx = new GradContext(b, node, inputs, outputs, outGrads, name => live.Contains("v:" + (rc?.Original(name) ?? name)));
        Value?[] dIn;
        using (b.Scope(node.Name.Replace('/', '.')))
        {
            dIn = op.Grad(ctx);
        }
        for (var k = 0; k < inputs.Length && k < dIn.Length; k++)
        {
            var name = node.Inputs[k];                                                              // the forward value
            if (inputs[k] is not { } x || dIn[k] is not { } dx || !live.Contains("v:" + name) || !x.DType.IsFloat()) continue;
            if (!grads.TryGetValue(name, out var list)) grads[name] = list = [];
            list.Add(dx);
        }
    }

    /// <summary>Sum of gradient contributions to a value (fan-in), or null if none.</summary>
    private static Value? Total(Builder b, Dictionary<string, List<Value>> grads, string name)
    {
        if (!grads.TryGetValue(name, out var list) || list.Count == 0) return null;
        var sum = list[0];
        for (var i = 1; i < list.Count; i++) sum = b.Add(sum, list[i]);
        grads[name] = [sum];
        return sum;
    }

    /// <summary>
    /// Nodes (by name) and float values ("v:" + name) that lie on a path from a parameter to the loss:
    /// forward-reachable from the parameters and backward-reachable from the loss.
    /// </summary>
    private static HashSet<string> Between(Builder b, Node[] nodes, IEnumerable<string> parameters, string loss)
    {
        var fromParams = new HashSet<string>(parameters, StringComparer.Ordinal);
        foreach (var n in nodes)
        {
            // integer/bool outputs (shapes, indices, masks) and stop-gradient outputs cut the path
            if (n.Inputs.Any(fromParams.Contains)) foreach (var o in n.Outputs.Where(o => b.Get(o).DType.IsFloat() && !b.IsStopped(o))) fromParams.Add(o);
        }
        var toLoss = new HashSet<string>(StringComparer.Ordinal) { loss };
        var live = new HashSet<string>(StringComparer.Ordinal);
        for (var i = nodes.Length - 1; i >= 0; i--)
        {
            var n = nodes[i];
            if (!n.Outputs.Any(toLoss.Contains) || !n.Outputs.Any(fromParams.Contains)) continue;
            live.Add(n.Name);
            foreach (var x in n.Inputs.Where(x => x.Length > 0 && fromParams.Contains(x)))
            {
                toLoss.Add(x);
                live.Add("v:" + x);
            }
        }
        return live;
    }
}
