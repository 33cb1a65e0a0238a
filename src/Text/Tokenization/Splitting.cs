using System.Globalization;
using System.Text.RegularExpressions;

namespace MixLoRA.Text.Tokenization;

/// <summary>A piece of text moving through the pipeline; <see cref="AtStart"/> when it begins the input text.</summary>
internal readonly record struct Piece(string Text, bool AtStart);

/// <summary>How the matches of a split pattern are kept (HF `SplitDelimiterBehavior`).</summary>
internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>
/// A regex that matches code points the way the Rust (Oniguruma) engine of HF tokenizers does.
/// .NET regexes see UTF-16 units, so a character outside the BMP (an emoji, a rare CJK letter) would be
/// two "characters" of category Surrogate; before matching, each such code point is replaced by one BMP
/// character of the same Unicode category, and match offsets are mapped back.
/// </summary>
internal sealed class CodePointRegex
{
    private readonly Regex _regex;

    public CodePointRegex(string pattern) =>
        _regex = new Regex(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant);

    public static CodePointRegex Literal(string text) => new(Regex.Escape(text));

    /// <summary>Match spans (UTF-16 start, end) in <paramref name="s"/>, leftmost first, not overlapping.</summary>
    public List<(int Start, int End)> Matches(string s)
    {
        var result = new List<(int, int)>();
        int[]? map = null;
        string subject = HasSurrogates(s) ? Substitute(s, out map) : s;
        foreach (var m in _regex.EnumerateMatches(subject))
        {
            int start = m.Index, end = m.Index + m.Length;
            result.Add(map is null ? (start, end) : (map[start], map[end]));
        }
        return result;
    }

    public string Replace(string s, string replacement)
    {
        var matches = Matches(s);
        if (matches.Count == 0) return s;
        var sb = new System.Text.StringBuilder(s.Length);
        int prev = 0;
        foreach (var (start, end) in matches)
        {
            sb.Append(s, prev, start - prev).Append(replacement);
            prev = end;
        }
        return sb.Append(s, prev, s.Length - prev).ToString();
    }

    private static bool HasSurrogates(string s)
    {
        foreach (char c in s)
            if (char.IsSurrogate(c)) return true;
        return false;
    }

    private static string Substitute(string s, out int[] map)
    {
        var chars = new char[s.Length];
        map = new int[s.Length + 1];
        int n = 0;
        for (int i = 0; i < s.Length; n++)
        {
            map[n] = i;
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                var category = CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(s[i], s[i + 1]));
                chars[n] = Representatives.Value[(int)category];
                i += 2;
            }
            else
            {
                chars[n] = s[i];
                i++;
            }
        }
        map[n] = s.Length;
        return new string(chars, 0, n);
    }

    /// <summary>For each Unicode category, a non-ASCII, non-space BMP character of that category.</summary>
    private static readonly Lazy<char[]> Representatives = new(() =>
    {
        var reps = new char[32];
        for (int c = 0xFFFF; c >= 0x80; c--)
        {
            char ch = (char)c;
            if (char.IsSurrogate(ch) || char.IsWhiteSpace(ch)) continue;
            reps[(int)CharUnicodeInfo.GetUnicodeCategory(ch)] = ch;
        }
        for (int i = 0; i < reps.Length; i++)
            if (reps[i] == '\0') reps[i] = '\uE000';
        return reps;
    });
}

/// <summary>Splitting a string on pattern matches, as HF `NormalizedString::split`.</summary>
internal static class Splitter
{
    /// <summary>Pieces of <paramref name="s"/> (start, end) for the given matches and behavior; empty pieces dropped.</summary>
    public static List<(int Start, int End)> Split(string s, List<(int Start, int End)> matches, SplitBehavior behavior, bool invert = false)
    {
        var cover = Cover(s, matches, invert);
        var pieces = new List<(int Start, int End, bool Remove)>(cover.Count);
        switch (behavior)
        {
            case SplitBehavior.Isolated:
                foreach (var (a, b, _) in cover) pieces.Add((a, b, false));
                break;
            case SplitBehavior.Removed:
                pieces.AddRange(cover);
                break;
            case SplitBehavior.Contiguous:
            {
                bool previous = false;
                foreach (var (a, b, isMatch) in cover)
                {
                    if (isMatch == previous && pieces.Count > 0) pieces[^1] = (pieces[^1].Start, b, false);
                    else pieces.Add((a, b, false));
                    previous = isMatch;
                }
                break;
            }
            case SplitBehavior.MergedWithPrevious:
            {
                bool previous = false;
                foreach (var (a, b, isMatch) in cover)
                {
                    if (isMatch && !previous && pieces.Count > 0) pieces[^1] = (pieces[^1].Start, b, false);
                    else pieces.Add((a, b, false));
                    previous = isMatch;
                }
                break;
            }
            case SplitBehavior.MergedWithNext:
            {
                bool previous = false;
                for (int i = cover.Count - 1; i >= 0; i--)
                {
                    var (a, b, isMatch) = cover[i];
                    if (isMatch && !previous && pieces.Count > 0) pieces[^1] = (a, pieces[^1].End, false);
                    else pieces.Add((a, b, false));
                    previous = isMatch;
                }
                pieces.Reverse();
                break;
            }
        }
        var result = new List<(int, int)>(pieces.Count);
        foreach (var (a, b, remove) in pieces)
            if (!remove && b > a) result.Add((a, b));
        return result;
    }

    private static List<(int Start, int End, bool IsMatch)> Cover(string s, List<(int Start, int End)> matches, bool invert)
    {
        var cover = new List<(int, int, bool)>(matches.Count * 2 + 1);
        int prev = 0;
        foreach (var (start, end) in matches)
        {
            if (prev != start) cover.Add((prev, start, invert));
            cover.Add((start, end, !invert));
            prev = end;
        }
        if (prev != s.Length) cover.Add((prev, s.Length, invert));
        return cover;
    }

    /// <summary>Splits each piece with <paramref name="split"/>; sub-pieces keep AtStart only when they begin their parent.</summary>
    public static List<Piece> Apply(List<Piece> pieces, Func<string, List<(int Start, int End)>> split)
    {
        var result = new List<Piece>(pieces.Count * 2);
        foreach (var p in pieces)
            foreach (var (a, b) in split(p.Text))
                result.Add(new Piece(p.Text[a..b], p.AtStart && a == 0));
        return result;
    }
}
