using System.Collections.Frozen;
using System.Reflection;

namespace MixLoRA.GraphBuilder.Ops;

/// <summary>
/// The single source of truth for ops: every <c>public static readonly OpDef</c> field of a static class
/// in this namespace. Autodiff looks rules up here; meta-tests check every entry has a rule or a reason,
/// and cases for its rule.
/// </summary>
public static class Catalog
{
    public static IReadOnlyList<OpDef> All { get; } = typeof(Catalog).Assembly.GetTypes()
        .Where(t => t.Namespace == typeof(Catalog).Namespace && t.IsAbstract && t.IsSealed)
        .SelectMany(t => t.GetFields(BindingFlags.Public | BindingFlags.Static))
        .Where(f => f.FieldType == typeof(OpDef) && f.IsInitOnly)
        .Select(f => (OpDef)f.GetValue(null)!)
        .OrderBy(d => d.Key, StringComparer.Ordinal)
        .ToArray();

    private static readonly Lazy<FrozenDictionary<string, OpDef>> ByKey = new(() =>
        All.GroupBy(d => d.Key).ToFrozenDictionary(g => g.Key, g => g.First()));

    public static OpDef? Find(string key) => ByKey.Value.TryGetValue(key, out var d) ? d : null;
}
