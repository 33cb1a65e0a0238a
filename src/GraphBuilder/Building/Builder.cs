using System.Collections.Immutable;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Building;

/// <summary>
/// Accumulates nodes in topological order and snapshots them into an immutable <see cref="Graph"/>.
/// Op emitters are extension methods in Ops/ (one file per op family): <c>var h = b.MatMul(x, w)</c>.
/// Names are deterministic: scope path + op + a per-builder counter.
/// </summary>
public sealed class Builder
{
    private readonly List<Node> _nodes = [];
    private readonly Dictionary<string, Value> _values = new(StringComparer.Ordinal);
    private readonly Dictionary<string, TensorData> _consts = new(StringComparer.Ordinal);
    private readonly List<Value> _inputs = [];
    private readonly List<Value> _outputs = [];
    private readonly List<TensorData> _initializers = [];
    private readonly Stack<string> _scopes = new();
    private readonly Dictionary<string, int> _counters = new(StringComparer.Ordinal);
    private readonly HashSet<string> _stops = new(StringComparer.Ordinal);
    private readonly SortedDictionary<string, int> _opsets = new(StringComparer.Ordinal) { [""] = Graph.DefaultOpset };

    public Builder(string name) => Name = name;

    public string Name { get; }
    public IReadOnlyList<Node> Nodes => _nodes;
    public IReadOnlyList<Value> Inputs => _inputs;
    public IReadOnlyList<Value> GraphOutputs => _outputs;

    /// <summary>The current scope path ("model.layers.3.mlp"), HF-key style.</summary>
    public string ScopePath => string.Join(".", _scopes.Reverse());

    public IDisposable Scope(string name)
    {
        _scopes.Push(name);
        return new Scoped(() => _scopes.Pop());
    }

    /// <summary>A fresh deterministic value name: "scope/hint" or "scope/hint_3" when taken.</summary>
    public string Fresh(string hint)
    {
        var baseName = _scopes.Count == 0 ? hint : $"{ScopePath}/{hint}";
        var n = _counters.TryGetValue(baseName, out var c) ? c : 0;
        _counters[baseName] = n + 1;
        var name = n == 0 ? baseName : $"{baseName}_{n}";
        return _values.ContainsKey(name) ? Fresh(hint) : name;
    }

    public Value Get(string name) => _values.TryGetValue(name, out var v) ? v : throw Fail.Bug($"no value '{name}' in graph {Name}");
    public bool Has(string name) => _values.ContainsKey(name);

    /// <summary>A graph input (weights, data, optimizer state all enter this way).</summary>
    public Value Input(string name, DType dtype, params Dim[] dims) => Input(name, dtype, Shape.Of(dims));

    public Value Input(string name, DType dtype, Shape? shape)
    {
        if (_values.ContainsKey(name)) throw Fail.Bug($"value '{name}' defined twice in graph {Name}");
        var v = new Value(name, dtype, shape);
        _values[name] = v;
        _inputs.Add(v);
        _inputNames.Add(name);
        return v;
    }

    public bool IsInput(string name) => _inputNames.Contains(name);

    /// <summary>The graph input <paramref name="name"/>, declared on first use (shared by the nodes that read it).</summary>
    public Value InputOnce(string name, DType dtype, Shape? shape)
    {
        if (!_inputNames.Contains(name)) return Input(name, dtype, shape);
        var v = _values[name];
        return v.DType == dtype ? v : throw Fail.Bug($"input '{name}' declared as {v}, asked for as {dtype.Name()}");
    }

    private readonly HashSet<string> _inputNames = new(StringComparer.Ordinal);

    /// <summary>Marks a value as a graph output, renaming through Identity when a name is given.</summary>
    public Value Output(Value v, string? name = null)
    {
        if (name != null && name != v.Name)
        {
            v = Apply(ShapeOps.Identity, [v], name: name)[0];
        }
        _outputs.Add(v);
        return v;
    }

    /// <summary>An initializer baked into the graph (small constants; weights enter as inputs instead).</summary>
    public Value Initializer(TensorData t)
    {
        var v = new Value(t.Name, t.DType, Shape.Of(t.Dims));
        _values[t.Name] = v;
        _consts[t.Name] = t;
        _initializers.Add(t);
        return v;
    }

    /// <summary>The constant value behind a value, when it is an initializer or Constant node output.</summary>
    public TensorData? ConstantOf(Value? v) => v != null && _consts.TryGetValue(v.Name, out var t) ? t : null;

    internal void RecordConstant(string name, TensorData t) => _consts[name] = t;

    /// <summary>Records a more precise shape for a value (e.g. symbolic dims a reshape could not infer).</summary>
    public Value Refine(Value v, Shape shape)
    {
        var r = v with { Shape = shape };
        _values[v.Name] = r;
        return r;
    }

    /// <summary>
    /// x as a constant for differentiation (torch's detach): an Identity whose output autodiff treats as
    /// off every parameter path, so no gradient flows back through it.
    /// </summary>
    public Value StopGradient(Value x)
    {
        var y = Apply1(ShapeOps.Identity, [x]);
        _stops.Add(y.Name);
        return y;
    }

    /// <summary>True for outputs of <see cref="StopGradient"/>.</summary>
    public bool IsStopped(string name) => _stops.Contains(name);

    public void UseOpset(string domain, int version) => _opsets[domain] = version;

    /// <summary>The recomputation segments of this builder's nodes (Autodiff's: <see cref="Autodiff.Segments"/>).</summary>
    public Autodiff.Segments Segments { get; } = new();

    /// <summary>Records the nodes emitted until disposal as one recomputation segment (<see cref="Autodiff.Segments.Record"/>).</summary>
    public IDisposable Segment() => Segments.Record(this);

    private sealed class Scoped(Action done) : IDisposable
    {
        private bool _done;
        public void Dispose()
        {
            if (_done) return;
            _done = true;
            done();
        }
    }

    /// <summary>Emits one node of a catalog op; infers its outputs' dtypes and shapes.</summary>
    public Value[] Apply(OpDef op, IReadOnlyList<Value?> inputs, IEnumerable<KeyValuePair<string, object>>? attrs = null, string? name = null, int? outputs = null)
    {
        var attrMap = Node.NormalizeAttrs(attrs);
        var n = outputs ?? op.Outputs;
        var outNames = new string[n];
        for (var i = 0; i < n; i++)
        {
            outNames[i] = i == 0 ? (name ?? Fresh(op.OpType)) : $"{outNames[0]}:{i}";
        }
        var node = new Node(outNames[0], op.OpType, op.Domain,
            inputs.Select(v => v?.Name ?? "").ToImmutableArray(), outNames.ToImmutableArray(), attrMap);
        var specs = op.Infer(new InferContext(this, node, inputs));
        if (specs.Length < n) throw Fail.Bug($"{op.OpType} inferred {specs.Length} outputs, expected {n}");
        var result = new Value[n];
        for (var i = 0; i < n; i++)
        {
            result[i] = new Value(outNames[i], specs[i].DType, specs[i].Shape);
            _values[outNames[i]] = result[i];
        }
        if (op.Domain.Length > 0 && !_opsets.ContainsKey(op.Domain)) _opsets[op.Domain] = 1;
        _nodes.Add(node);
        return result;
    }

    public Value Apply1(OpDef op, IReadOnlyList<Value?> inputs, IEnumerable<KeyValuePair<string, object>>? attrs = null, string? name = null) =>
        Apply(op, inputs, attrs, name)[0];

    /// <summary>
    /// Gives the last emitted node a name other than its first output's (<see cref="Onnx.OnnxReader"/> keeps a file's
    /// node names: after <see cref="Build"/> folds an output rename, a node writes an output not named after it).
    /// </summary>
    internal void NameLastNode(string name) => _nodes[^1] = _nodes[^1] with { Name = name };

    /// <summary>Snapshot as an immutable graph. Unused inputs are kept (they are part of the IO contract).</summary>
    public Graph Build()
    {
        var (nodes, values) = FoldOutputRenames();
        return new(
            Name,
            _inputs.ToImmutableArray(),
            _outputs.ToImmutableArray(),
            nodes,
            _initializers.ToImmutableArray(),
            values,
            _opsets.ToImmutableSortedDictionary(StringComparer.Ordinal));
    }

    /// <summary>
    /// Output renames (<see cref="Output"/>'s Identity) folded into the producing node: when the renamed
    /// value has no other consumer and is no graph output itself, its producer writes the output name
    /// directly. On CUDA each Identity is a device copy into the bound output (1,254 per MixLoRA step).
    /// </summary>
    private (ImmutableArray<Node> Nodes, ImmutableDictionary<string, Value> Values) FoldOutputRenames()
    {
        var uses = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var n in _nodes) foreach (var i in n.Inputs) uses[i] = uses.GetValueOrDefault(i) + 1;
        var outputs = _outputs.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        var producer = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var k = 0; k < _nodes.Count; k++) foreach (var o in _nodes[k].Outputs) producer[o] = k;
        var nodes = _nodes.ToArray();
        var drop = new HashSet<int>();
        var values = _values.ToDictionary(StringComparer.Ordinal);
        for (var k = 0; k < nodes.Length; k++)
        {
            var n = nodes[k];
            if (n.OpType != ShapeOps.Identity.OpType || n.Domain.Length > 0 || !outputs.Contains(n.Outputs[0])) continue;
            var src = n.Inputs[0];
            if (outputs.Contains(src) || uses.GetValueOrDefault(src) != 1 || !producer.TryGetValue(src, out var p) || _stops.Contains(n.Outputs[0])) continue;
            nodes[p] = nodes[p] with { Outputs = nodes[p].Outputs.Replace(src, n.Outputs[0]) };
            producer[n.Outputs[0]] = p;
            values.Remove(src);
            drop.Add(k);
        }
        return (nodes.Where((_, k) => !drop.Contains(k)).ToImmutableArray(), values.ToImmutableDictionary(StringComparer.Ordinal));
    }
}

/// <summary>Attribute list helper: <c>A.Of(("axis", -1), ("keepdims", 0))</c>.</summary>
public static class A
{
    public static KeyValuePair<string, object>[] Of(params (string Key, object Value)[] attrs) =>
        attrs.Select(a => new KeyValuePair<string, object>(a.Key, a.Value)).ToArray();
}
