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
    /// <summary>Emits d(loss)/d(p) for each p; returns parameter name → gradient value.</summary>
    public static IReadOnlyDictionary<string, Value> Emit(Builder b, Value loss, IReadOnlyList<Value> parameters, Value? seed = null)
    {
        var forward = b.Nodes.ToArray();
        var live = Between(b, forward, parameters.Select(p => p.Name), loss.Name);
        var grads = new Dictionary<string, List<Value>>(StringComparer.Ordinal)
        {
            [loss.Name] = [seed ?? b.Scalar(1, loss.DType)],
        };
        using (b.Scope("grad"))
        {
            for (var i = forward.Length - 1; i >= 0; i--)
            {
                var node = forward[i];
                if (!live.Contains(node.Name)) continue;
                var outGrads = node.Outputs.Select(o => Total(b, grads, o)).ToArray();
                if (outGrads.All(g => g is null)) continue;
                Apply(b, node, outGrads, live, grads);
            }
            var result = new Dictionary<string, Value>(StringComparer.Ordinal);
            foreach (var p in parameters)
            {
                result[p.Name] = Total(b, grads, p.Name) ?? b.ZerosLike(p);
            }
            return result;
        }
    }

    private static void Apply(Builder b, Node node, Value?[] outGrads, HashSet<string> live, Dictionary<string, List<Value>> grads)
    {
        var op = Catalog.Find(node.Key) ?? throw Fail.Bug($"op {node.Key} of node '{node.Name}' is not in the catalog");
        var inputs = node.Inputs.Select(n => n.Length == 0 ? null : b.Get(n)).ToArray();
        if (op.Grad is null)
        {
            if (inputs.Any(v => v != null && live.Contains("v:" + v.Name) && v.DType.IsFloat()))
            {
                var shapes = string.Join(", ", inputs.Select(v => v?.ToString() ?? "-"));
                throw Fail.Bug($"no gradient rule for {node.Key} (node '{node.Name}', inputs {shapes}): {op.NoGradReason ?? "missing rule"}");
            }
            return;
        }
        var outputs = node.Outputs.Select(b.Get).ToArray();
        var ctx = new GradContext(b, node, inputs, outputs, outGrads, name => live.Contains("v:" + name));
        Value?[] dIn;
        using (b.Scope(node.Name.Replace('/', '.')))
        {
            dIn = op.Grad(ctx);
        }
        for (var k = 0; k < inputs.Length && k < dIn.Length; k++)
        {
            if (inputs[k] is not { } x || dIn[k] is not { } dx || !live.Contains("v:" + x.Name) || !x.DType.IsFloat()) continue;
            if (!grads.TryGetValue(x.Name, out var list)) grads[x.Name] = list = [];
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
