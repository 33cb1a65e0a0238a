using MixLoRA.GraphBuilder.Building;

namespace MixLoRA.GraphBuilder.Autodiff;

/// <summary>
/// Units of activation recomputation (gradient checkpointing): node-index ranges [Start, End) of one builder,
/// one decoder layer each. The forward records them while it is emitted (<see cref="Builder.Segment"/> calls
/// <see cref="Record"/>); <see cref="Gradients.Emit"/> with recompute on emits each segment again just before
/// its backward (<see cref="Recompute"/>). A segment that emitted no node is not recorded.
/// </summary>
public sealed class Segments
{
    private readonly List<(int Start, int End)> _ranges = [];

    /// <summary>The recorded ranges, in emission order.</summary>
    public IReadOnlyList<(int Start, int End)> Ranges => _ranges;

    /// <summary>Records the nodes <paramref name="b"/> emits until disposal as one segment.</summary>
    public IDisposable Record(Builder b)
    {
        var start = b.Nodes.Count;
        return new Closing(() =>
        {
            if (b.Nodes.Count > start) _ranges.Add((start, b.Nodes.Count));
        });
    }

    /// <summary>The segments that lie within the first <paramref name="count"/> nodes (the forward a backward walks over).</summary>
    internal List<(int Start, int End)> Within(int count) => [.. _ranges.Where(s => s.End <= count)];

    private sealed class Closing(Action close) : IDisposable
    {
        private bool _closed;

        public void Dispose()
        {
            if (_closed) return;
            _closed = true;
            close();
        }
    }
}
