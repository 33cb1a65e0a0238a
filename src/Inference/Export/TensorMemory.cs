using System.Buffers;
using System.Runtime.InteropServices;

namespace MixLoRA.Inference.Export;

/// <summary>
/// Tensor bytes that are not held in managed memory: a view of a memory-mapped checkpoint, or bytes computed
/// each time they are read (a dtype conversion, a LoRA merge). The ONNX writer reads each initializer once, so an
/// export holds one converted tensor at a time, never the whole model.
/// </summary>
internal static class TensorMemory
{
    /// <summary>A view of <paramref name="length"/> bytes at <paramref name="pointer"/> (the mapping must outlive it).</summary>
    public static unsafe ReadOnlyMemory<byte> Mapped(byte* pointer, int length) => new MappedManager(pointer, length).Memory;

    /// <summary>Bytes produced by <paramref name="compute"/> on every read, of a length known up front.</summary>
    public static ReadOnlyMemory<byte> Computed(int length, Func<byte[]> compute) => new ComputedManager(length, compute).Memory;

    private sealed unsafe class MappedManager(byte* pointer, int length) : MemoryManager<byte>
    {
        public override Memory<byte> Memory => CreateMemory(length);
        public override Span<byte> GetSpan() => new(pointer, length);
        public override MemoryHandle Pin(int elementIndex = 0) => new(pointer + elementIndex);
        public override void Unpin() { }
        protected override void Dispose(bool disposing) { }
    }

    private sealed class ComputedManager(int length, Func<byte[]> compute) : MemoryManager<byte>
    {
        public override Memory<byte> Memory => CreateMemory(length);

        public override Span<byte> GetSpan()
        {
            var bytes = compute();
            if (bytes.Length != length) throw GraphBuilder.Fail.Bug($"computed tensor has {bytes.Length} bytes, {length} were announced");
            return bytes;
        }

        public override unsafe MemoryHandle Pin(int elementIndex = 0)
        {
            var bytes = compute();
            var handle = GCHandle.Alloc(bytes, GCHandleType.Pinned);
            return new MemoryHandle((byte*)handle.AddrOfPinnedObject() + elementIndex, handle);
        }

        public override void Unpin() { }
        protected override void Dispose(bool disposing) { }
    }
}
