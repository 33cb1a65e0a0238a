using System.Collections.Immutable;

namespace MixLoRA.GraphBuilder.IR;

/// <summary>One dimension: a number, a symbol (B, T, past_seq), or unknown.</summary>
public readonly record struct Dim(long Value, string? Symbol)
{
    public static readonly Dim Unknown = new(-1, null);
    public static Dim Of(long v) => new(v, null);
    public static Dim Sym(string s) => new(-1, s);
    public static implicit operator Dim(long v) => Of(v);
    public static implicit operator Dim(int v) => Of(v);
    public static implicit operator Dim(string s) => Sym(s);
    public bool IsStatic => Value >= 0;
    public bool IsKnown => Value >= 0 || Symbol != null;
    /// <summary>True when both are known to be the same size.</summary>
    public bool SameAs(Dim o) => (IsStatic && o.IsStatic && Value == o.Value) || (Symbol != null && Symbol == o.Symbol);
    public override string ToString() => IsStatic ? Value.ToString(System.Globalization.CultureInfo.InvariantCulture) : Symbol ?? "?";
}

/// <summary>A tensor shape with a known rank; dims may be symbolic.</summary>
public sealed record Shape(ImmutableArray<Dim> Dims)
{
    public static Shape Of(params Dim[] dims) => new(dims.ToImmutableArray());
    public static Shape Of(IEnumerable<long> dims) => new(dims.Select(Dim.Of).ToImmutableArray());
    public static readonly Shape Scalar = new(ImmutableArray<Dim>.Empty);
    public int Rank => Dims.Length;
    public Dim this[int i] => Dims[i < 0 ? i + Rank : i];
    public bool IsStatic => Dims.All(d => d.IsStatic);
    public long[] ToLongs() => IsStatic ? Dims.Select(d => d.Value).ToArray() : throw Fail.Bug($"shape {this} is not static");
    public long Count => ToLongs().Aggregate(1L, (a, b) => a * b);
    public bool SameAs(Shape o) => Rank == o.Rank && Dims.Zip(o.Dims).All(p => p.First.SameAs(p.Second));
    public Shape With(int axis, Dim d) => new(Dims.SetItem(axis < 0 ? axis + Rank : axis, d));
    public override string ToString() => "(" + string.Join(", ", Dims) + ")";
    public bool Equals(Shape? other) => other is not null && Dims.SequenceEqual(other.Dims);
    public override int GetHashCode() => Dims.Aggregate(Rank, (h, d) => HashCode.Combine(h, d));
}
