using System.Collections.Immutable;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>An output's inferred type: dtype and (possibly unknown) shape.</summary>
public readonly record struct OutSpec(DType DType, Shape? Shape);

public delegate OutSpec[] InferFn(InferContext c);

/// <summary>Gradient rule: returns one gradient per input (null where none flows).</summary>
public delegate Value?[] GradFn(GradContext g);

/// <summary>
/// One catalog record per primitive op: the ONNX op, shape/dtype inference, the gradient rule (written
/// with the same builder) or an explicit reason why it has none, and gradient-check cases.
/// </summary>
public sealed record OpDef(string OpType, string Domain = "")
{
    public int Outputs { get; init; } = 1;
    public required InferFn Infer { get; init; }
    public GradFn? Grad { get; init; }
    /// <summary>Set instead of Grad for ops that have no gradient (integer/index/shape ops).</summary>
    public string? NoGradReason { get; init; }
    /// <summary>Gradient-check cases (required when Grad is set).</summary>
    public ImmutableArray<GradCase> Cases { get; init; } = [];
    public string Key => Domain.Length == 0 ? OpType : $"{Domain}.{OpType}";
}

/// <summary>What shape inference sees: the node being emitted and its inputs.</summary>
public sealed class InferContext(Builder builder, Node node, IReadOnlyList<Value?> inputs)
{
    public Builder B { get; } = builder;
    public Node Node { get; } = node;
    public IReadOnlyList<Value?> Inputs { get; } = inputs;
    public Value In(int i) => Inputs[i] ?? throw Fail.Bug($"{Node.OpType} '{Node.Name}' needs input {i}");
    public bool Has(int i) => i < Inputs.Count && Inputs[i] != null;
    public TensorData? Const(int i) => Has(i) ? B.ConstantOf(Inputs[i]) : null;
    public OutSpec[] Same(int i = 0) => [new(In(i).DType, In(i).Shape)];
    public static OutSpec[] Of(DType t, Shape? s) => [new(t, s)];
}

/// <summary>What a gradient rule sees: the forward node, its inputs/outputs and the output gradients.</summary>
public sealed class GradContext(Builder builder, Node node, IReadOnlyList<Value?> inputs, IReadOnlyList<Value> outputs, IReadOnlyList<Value?> outGrads, Func<string, bool>? needed = null)
{
    public Builder B { get; } = builder;
    public Node Node { get; } = node;
    public IReadOnlyList<Value?> Inputs { get; } = inputs;
    public IReadOnlyList<Value> Outputs { get; } = outputs;
    public IReadOnlyList<Value?> OutGrads { get; } = outGrads;
    public Value X(int i) => Inputs[i] ?? throw Fail.Bug($"{Node.OpType} '{Node.Name}' input {i} missing");
    public Value Y(int i = 0) => Outputs[i];
    /// <summary>Gradient of output 0 (or a zero tensor when only other outputs receive gradient).</summary>
    public Value Dy => OutGrads[0] ?? throw Fail.Bug($"{Node.OpType} '{Node.Name}' has no gradient on output 0");
    /// <summary>
    /// True when input i is a float tensor on a path from a parameter: rules emit nothing for the others
    /// (frozen weights get no weight-gradient GEMM).
    /// </summary>
    public bool Wants(int i) => i < Inputs.Count && Inputs[i] is { } v && v.DType.IsFloat() && (needed?.Invoke(v.Name) ?? true);
}

/// <summary>How a gradient-check input is filled.</summary>
public enum Gen { Normal, Positive, Index, IntConst, Bool, Distinct }

/// <summary>A gradient-check input: shape, dtype and how to fill it.</summary>
public sealed record Spec(long[] Dims, DType DType = DType.Float64, Gen Gen = Gen.Normal, long Max = 0, long[]? Values = null)
{
    public static Spec F(params long[] dims) => new(dims);
    public static Spec Pos(params long[] dims) => new(dims, Gen: Gen.Positive);
    /// <summary>Well-separated values, so max/top-k/sort are stable under finite differences.</summary>
    public static Spec Distinct(params long[] dims) => new(dims, Gen: Gen.Distinct);
    public static Spec Idx(long max, params long[] dims) => new(dims, DType.Int64, Gen.Index, max);
    public static Spec Ints(long[] values, params long[] dims) => new(dims, DType.Int64, Gen.IntConst, Values: values);
    public static Spec Mask(params long[] dims) => new(dims, DType.Bool, Gen.Bool);
}

/// <summary>One gradient-check case: inputs and the forward built from them (float inputs are checked).</summary>
public sealed record GradCase(string Label, ImmutableArray<Spec> Inputs, Func<Builder, Value[], Value> Forward)
{
    /// <summary>Finite-difference step (float64 inputs).</summary>
    public double Eps { get; init; } = 1e-6;

    /// <summary>Allowed |analytic − numeric| / max(1, |numeric|).</summary>
    public double Tol { get; init; } = 1e-6;

    public static GradCase Of(string label, Func<Builder, Value[], Value> forward, params Spec[] inputs) =>
        new(label, inputs.ToImmutableArray(), forward);

    /// <summary>
    /// A case for kernels that only run in float32: the float64 check inputs are cast to float32 on entry (other
    /// inputs, e.g. int64 targets, pass unchanged), with a finite-difference step and tolerance float32 resolves.
    /// </summary>
    public static GradCase Float32(string label, Func<Builder, Value[], Value> forward, params Spec[] inputs) =>
        Of(label, (b, x) => forward(b, x.Select(v => v.DType == DType.Float64 ? b.Cast(v, DType.Float32) : v).ToArray()), inputs) with { Eps = 3e-3, Tol = 5e-4 };
}
