using System.Text.RegularExpressions;
using MixLoRA.GraphBuilder.Tests.Fixtures;

namespace MixLoRA.GraphBuilder.Tests.Conventions;

/// <summary>
/// Every exception in src/ is made by the one throw helper, <see cref="Fail"/> (src/GraphBuilder/IR/Fail.cs): user
/// mistakes and runtime failures print as one `error:` line, broken invariants say "internal error". A `throw new`
/// or an exception constructed anywhere else would bypass that.
/// </summary>
[TestClass]
public sealed partial class ThrowSitesTests
{
    /// <summary>The helper itself, the only file that constructs exceptions.</summary>
    private static readonly string Helper = Path.Combine("src", "GraphBuilder", "IR", "Fail.cs");

    /// <summary>
    /// Files allowed to construct exceptions besides <see cref="Helper"/>, each with the reason. Empty: nothing
    /// needs one today (a JSON converter's error goes through <see cref="Fail.Json"/>).
    /// </summary>
    private static readonly Dictionary<string, string> Allowed = [];

    [GeneratedRegex(@"\bthrow\s+new\b|\bnew\s+[A-Za-z_.]*(Exception|Error)\s*\(")]
    private static partial Regex Construct();

    [TestMethod]
    public void NoExceptionIsConstructedOutsideFail()
    {
        var src = Path.Combine(Repo.Root, "src");
        var files = Directory.EnumerateFiles(src, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Split(Path.DirectorySeparatorChar).Any(part => part is "obj" or "bin"))
            .ToList();
        Assert.IsGreaterThan(100, files.Count, $"the scan should see the sources under {src}");
        var offences = new List<string>();
        foreach (var file in files)
        {
            var rel = Path.GetRelativePath(Repo.Root, file);
            if (rel == Helper || Allowed.ContainsKey(rel)) continue;
            var lines = File.ReadAllLines(file);
            for (var i = 0; i < lines.Length; i++)
            {
                var code = lines[i].TrimStart();
                if (code.StartsWith("//", StringComparison.Ordinal)) continue;      // comments and doc comments
                if (Construct().IsMatch(code)) offences.Add($"{rel}:{i + 1}: {code}");
            }
        }
        Assert.IsEmpty(offences, "throw through Fail (Fail.User/InFile/If for user mistakes, Fail.Runtime for ORT/CUDA failures, Fail.Bug for broken invariants, Fail.Arg for API misuse):\n"
            + string.Join("\n", offences));
    }

    [TestMethod]
    public void TheScanSeesAThrowNew()
    {
        Assert.IsTrue(Construct().IsMatch("return x ?? throw new JsonException(\"null\");"));
        Assert.IsTrue(Construct().IsMatch("var e = new InvalidOperationException(\"x\");"));
        Assert.IsTrue(Construct().IsMatch("throw new UserError(\"x\");"));
        Assert.IsFalse(Construct().IsMatch("throw Fail.Bug(\"x\");"));
        Assert.IsFalse(Construct().IsMatch("catch (OnnxRuntimeException e)"));
    }
}
