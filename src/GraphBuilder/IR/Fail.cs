namespace MixLoRA.GraphBuilder;

/// <summary>
/// A mistake in what the user gave us (a file, a flag, a config key). The CLIs print its message
/// alone, with no stack trace, and exit non-zero.
/// </summary>
public sealed class UserError : Exception
{
    public UserError(string message) : base(message) { }
    public UserError(string message, Exception inner) : base(message, inner) { }
    public UserError() { }
}

/// <summary>The one throw helper: every message names the bad value and says what would fix it.</summary>
public static class Fail
{
    /// <summary>A user mistake: "what is wrong: the fix".</summary>
    public static UserError User(string what, string fix) => new($"{what}: {fix}");

    /// <summary>A user mistake in a file, at a key or line.</summary>
    public static UserError InFile(string file, string where, string what, string fix) =>
        new($"{file}: {where}: {what}: {fix}");

    /// <summary>A programming error in how an API was called.</summary>
    public static ArgumentException Arg(string name, object? value, string expected) =>
        new($"{name} = {Show(value)}; expected {expected}", name);

    /// <summary>An internal invariant broke (a bug in this project, not in the input).</summary>
    public static InvalidOperationException Bug(string what) => new($"internal error: {what}");

    /// <summary>
    /// The machine's runtime failed in a way the user can act on (ONNX Runtime, the CUDA driver, NVRTC, a GPU
    /// computing a wrong result): "the cause: the fix". The native error, when there is one, is kept as the
    /// inner exception (the CLI prints its stack trace with MIXLORA_DEBUG=1).
    /// </summary>
    public static UserError Runtime(string what, string fix, Exception? inner = null) =>
        inner is null ? new($"{what}: {fix}") : new($"{what}: {fix}", inner);

    /// <summary>
    /// A malformed value met inside a JSON read (a converter, a null document) whose caller catches
    /// <see cref="System.Text.Json.JsonException"/> and reports it with the file and line.
    /// </summary>
    public static System.Text.Json.JsonException Json(string what) => new(what);

    /// <summary>
    /// A write the file system refused (disk full, no permission, a read-only or vanished folder), as one line naming
    /// <paramref name="path"/> (what the user asked to be written: a checkpoint, the adapter, metrics.jsonl) and the reason;
    /// the I/O exception is kept as the inner one. Callers delete what they had half-written first.
    /// </summary>
    public static UserError Write(string path, Exception fault)
    {
        var io = WriteFault(fault) ?? fault;
        return new($"could not write {path}: {Reason(io)}: free space or choose another --out", io);
    }

    /// <summary>The I/O exception behind <paramref name="e"/> when it is a refused write (directly, or already reported by a nested write), else null.</summary>
    public static Exception? WriteFault(Exception e) => e switch
    {
        IOException or UnauthorizedAccessException => e,
        UserError { InnerException: IOException or UnauthorizedAccessException } u => u.InnerException,
        _ => null,
    };

    /// <summary>ENOSPC (Linux errno 28, carried as the HResult of .NET's IOException) and Windows' disk-full codes.</summary>
    private static bool DiskFull(Exception e) => e.HResult is 28 or unchecked((int)0x80070070) or unchecked((int)0x80070027);

    private static string Reason(Exception e) => e switch
    {
        _ when DiskFull(e) => "no space left on device (disk full?)",
        UnauthorizedAccessException => "permission denied (disk full, read-only or not yours?)",
        _ => $"{e.Message.ReplaceLineEndings(" ").TrimEnd('.')} (disk full?)",
    };

    public static void If(bool condition, string what, string fix)
    {
        if (condition) throw User(what, fix);
    }

    public static string Show(object? v) => v switch
    {
        null => "null",
        string s => $"'{s}'",
        System.Collections.IEnumerable e => "[" + string.Join(", ", e.Cast<object?>().Select(Show)) + "]",
        _ => Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture) ?? "?",
    };
}
