using System.Collections.Immutable;
using System.Runtime.InteropServices;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>Constant, Shape, ConstantOfShape: graph plumbing with no gradient.</summary>
public static class ConstantOps
{
    public static readonly OpDef Constant = new("Constant")
    {
        Infer = c => c.Node.Attrs["value"] is TensorData t ? InferContext.Of(t.DType, Shape.Of(t.Dims)) : throw Fail.Bug("Constant needs a tensor 'value'"),
        NoGradReason = "a constant",
    };

    public static readonly OpDef ShapeOp = new("Shape")
    {
        Infer = c => InferContext.Of(DType.Int64, c.In(0).Shape is { } s ? Shape.Of(s.Rank) : Shape.Of(Dim.Unknown)),
        NoGradReason = "an integer shape",
    };

    public static readonly OpDef ConstantOfShape = new("ConstantOfShape")
    {
        Infer = c =>
        {
            var t = (TensorData)c.Node.Attrs["value"];
            var k = c.Const(0);
            var rank = c.In(0).Shape is { Rank: 1 } s && s[0].IsStatic ? (int)s[0].Value : -1;
            return InferContext.Of(t.DType, k != null ? Shape.Of(k.AsLongs()) : rank >= 0 ? new Shape(Enumerable.Repeat(Dim.Unknown, rank).ToImmutableArray()) : null);
        },
        NoGradReason = "a constant fill",
    };

    /// <summary>A tensor constant (Constant node), remembered for shape inference.</summary>
    public static Value Const(this Builder b, TensorData t)
    {
        var name = b.Fresh("const");
        var v = b.Apply1(Constant, [], A.Of(("value", t with { Name = name })), name);
        b.RecordConstant(v.Name, t);
        return v;
    }

    /// <summary>A 1-D int64 constant, e.g. axes or a target shape.</summary>
    public static Value Ints(this Builder b, params long[] values) => b.Const(TensorData.FromLongs("", values, values.Length));

    /// <summary>A scalar int64 constant.</summary>
    public static Value Int(this Builder b, long value) => b.Const(TensorData.FromLongs("", [value]));

    /// <summary>A scalar of a float dtype (float32/64/16, bfloat16).</summary>
    public static Value Scalar(this Builder b, double value, DType dtype) => b.Const(ScalarData(value, dtype, []));

    /// <summary>A float tensor constant of any float dtype from double values.</summary>
    public static Value Floats(this Builder b, double[] values, DType dtype, params long[] dims) => b.Const(FloatData(values, dtype, dims));

    public static Value ShapeOf(this Builder b, Value x) => b.Apply1(ShapeOp, [x]);

    /// <summary>A tensor of the shape of <paramref name="like"/> filled with <paramref name="value"/>.</summary>
    public static Value Full(this Builder b, Value like, double value)
    {
        if (like.Shape is { IsStatic: true } s)
        {
            return b.Apply1(ConstantOfShape, [b.Ints(s.ToLongs())], A.Of(("value", ScalarData(value, like.DType, [1]))));
        }
        return b.Apply1(ConstantOfShape, [b.ShapeOf(like)], A.Of(("value", ScalarData(value, like.DType, [1]))));
    }

    public static Value ZerosLike(this Builder b, Value like) => b.Full(like, 0);

    public static TensorData ScalarData(double value, DType dtype, long[] dims) => FloatData([value], dtype, dims);

    /// <summary>Values encoded in the given dtype's bytes (floats via <see cref="IO.TensorConvert"/>, torch rounding).</summary>
    public static TensorData FloatData(double[] values, DType dtype, long[] dims)
    {
        byte[] bytes = dtype switch
        {
            DType.Float64 => MemoryMarshal.AsBytes(values.AsSpan()).ToArray(),
            DType.Float32 or DType.Float16 or DType.BFloat16 => IO.TensorConvert.FromFloat32(values.Select(v => (float)v).ToArray(), dtype),
            DType.Int64 => MemoryMarshal.AsBytes(values.Select(v => (long)v).ToArray().AsSpan()).ToArray(),
            DType.Int32 => MemoryMarshal.AsBytes(values.Select(v => (int)v).ToArray().AsSpan()).ToArray(),
            DType.Bool => values.Select(v => v != 0 ? (byte)1 : (byte)0).ToArray(),
            _ => throw Fail.Arg(nameof(dtype), dtype, "a numeric dtype"),
        };
        return new TensorData("", dtype, dims.ToImmutableArray(), bytes);
    }
}
