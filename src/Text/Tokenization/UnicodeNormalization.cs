using System.Runtime.InteropServices;
using MixLoRA.GraphBuilder;

namespace MixLoRA.Text.Tokenization;

/// <summary>Unicode normalization forms used by tokenizer normalizers.</summary>
internal enum UnicodeForm { Nfc, Nfd, Nfkc, Nfkd }

/// <summary>
/// Unicode normalization (NFC/NFD/NFKC/NFKD). The build runs with invariant globalization, in which
/// <see cref="string.Normalize()"/> leaves non-ASCII text unchanged, so this calls the system ICU
/// (libicuuc) directly. Text that no form can change (ASCII; below U+0300 for NFC) skips ICU.
/// </summary>
internal static unsafe class UnicodeNormalization
{
    private static readonly Lazy<Icu?> Lib = new(Icu.TryLoad);

    public static string Normalize(string s, UnicodeForm form)
    {
        if (IsTriviallyNormalized(s, form)) return s;
        var icu = Lib.Value ?? throw Fail.User(
            $"Unicode {form.ToString().ToUpperInvariant()} normalization (asked for by the tokenizer's normalizer) needs ICU, and no libicuuc was found",
            "install the ICU library (e.g. apt-get install libicu-dev, or libicu72)");
        return icu.Normalize(s, form);
    }

    private static bool IsTriviallyNormalized(string s, UnicodeForm form)
    {
        char limit = form == UnicodeForm.Nfc ? '\u0300' : '\u0080';
        foreach (char c in s)
            if (c >= limit) return false;
        return true;
    }

    private sealed class Icu
    {
        private readonly delegate* unmanaged<int*, nint>[] _getInstance;
        private readonly delegate* unmanaged<nint, char*, int, char*, int, int*, int> _normalize;

        private Icu(delegate* unmanaged<int*, nint>[] getInstance, delegate* unmanaged<nint, char*, int, char*, int, int*, int> normalize)
        {
            _getInstance = getInstance;
            _normalize = normalize;
        }

        public static Icu? TryLoad()
        {
            foreach (var (lib, suffix) in Candidates())
            {
                if (!NativeLibrary.TryLoad(lib, out var handle)) continue;
                string[] names = ["unorm2_getNFCInstance", "unorm2_getNFDInstance", "unorm2_getNFKCInstance", "unorm2_getNFKDInstance"];
                var getters = new delegate* unmanaged<int*, nint>[4];
                bool ok = true;
                for (int i = 0; i < 4 && ok; i++)
                {
                    ok = NativeLibrary.TryGetExport(handle, names[i] + suffix, out var f);
                    getters[i] = (delegate* unmanaged<int*, nint>)f;
                }
                if (ok && NativeLibrary.TryGetExport(handle, "unorm2_normalize" + suffix, out var n))
                    return new Icu(getters, (delegate* unmanaged<nint, char*, int, char*, int, int*, int>)n);
            }
            return null;
        }

        private static IEnumerable<(string Lib, string Suffix)> Candidates()
        {
            for (int v = 90; v >= 50; v--)
            {
                yield return ($"libicuuc.so.{v}", $"_{v}");
                yield return ($"libicuuc.{v}.dylib", $"_{v}");
            }
            yield return ("libicuuc.so", "");
            yield return ("icuuc", "");
        }

        public string Normalize(string s, UnicodeForm form)
        {
            int err = 0;
            nint norm = _getInstance[(int)form](&err);
            if (err > 0 || norm == 0) throw Fail.Bug($"ICU could not create the {form} normalizer (error {err})");
            int capacity = s.Length * 2 + 16;
            while (true)
            {
                var buffer = new char[capacity];
                err = 0;
                int len;
                fixed (char* src = s)
                fixed (char* dst = buffer)
                    len = _normalize(norm, src, s.Length, dst, capacity, &err);
                const int bufferOverflow = 15;
                if (err == bufferOverflow) { capacity = len + 16; continue; }
                if (err > 0) throw Fail.Bug($"ICU {form} normalization failed (error {err})");
                return new string(buffer, 0, len);
            }
        }
    }
}
