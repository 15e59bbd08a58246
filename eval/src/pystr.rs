//! The few Python 3 `str`/`re`/`round` semantics the official VQA scorer relies on, reproduced exactly
//! (reference interpreter: CPython 3.11, Unicode 14.0; `tests/fixtures/vqa-tricky/unicode_tables.json`
//! holds that interpreter's tables and `tests` compares against all of them).

/// Python `str.isspace()`: Rust's `White_Space` property plus the four ASCII separators U+001C..U+001F,
/// which Python counts as whitespace through their bidirectional class (B/S).
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python `str.strip()` with no argument.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Python `str.split()` with no argument: runs of whitespace separate, empty pieces are dropped.
pub fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|w| !w.is_empty())
}

/// First code point of every run of ten Unicode decimal digits (category Nd) in Unicode 14.0, i.e. what
/// Python's `re` matches with `\d` in a `str` pattern. Every run has ten members except the mathematical
/// digits U+1D7CE..U+1D7FF (five styles of 0-9 back to back).
const DECIMAL_DIGIT_RANGES: [(u32, u32); 62] = [
    (0x30, 0x39),
    (0x660, 0x669),
    (0x6F0, 0x6F9),
    (0x7C0, 0x7C9),
    (0x966, 0x96F),
    (0x9E6, 0x9EF),
    (0xA66, 0xA6F),
    (0xAE6, 0xAEF),
    (0xB66, 0xB6F),
    (0xBE6, 0xBEF),
    (0xC66, 0xC6F),
    (0xCE6, 0xCEF),
    (0xD66, 0xD6F),
    (0xDE6, 0xDEF),
    (0xE50, 0xE59),
    (0xED0, 0xED9),
    (0xF20, 0xF29),
    (0x1040, 0x1049),
    (0x1090, 0x1099),
    (0x17E0, 0x17E9),
    (0x1810, 0x1819),
    (0x1946, 0x194F),
    (0x19D0, 0x19D9),
    (0x1A80, 0x1A89),
    (0x1A90, 0x1A99),
    (0x1B50, 0x1B59),
    (0x1BB0, 0x1BB9),
    (0x1C40, 0x1C49),
    (0x1C50, 0x1C59),
    (0xA620, 0xA629),
    (0xA8D0, 0xA8D9),
    (0xA900, 0xA909),
    (0xA9D0, 0xA9D9),
    (0xA9F0, 0xA9F9),
    (0xAA50, 0xAA59),
    (0xABF0, 0xABF9),
    (0xFF10, 0xFF19),
    (0x104A0, 0x104A9),
    (0x10D30, 0x10D39),
    (0x11066, 0x1106F),
    (0x110F0, 0x110F9),
    (0x11136, 0x1113F),
    (0x111D0, 0x111D9),
    (0x112F0, 0x112F9),
    (0x11450, 0x11459),
    (0x114D0, 0x114D9),
    (0x11650, 0x11659),
    (0x116C0, 0x116C9),
    (0x11730, 0x11739),
    (0x118E0, 0x118E9),
    (0x11950, 0x11959),
    (0x11C50, 0x11C59),
    (0x11D50, 0x11D59),
    (0x11DA0, 0x11DA9),
    (0x16A60, 0x16A69),
    (0x16AC0, 0x16AC9),
    (0x16B50, 0x16B59),
    (0x1D7CE, 0x1D7FF),
    (0x1E140, 0x1E149),
    (0x1E2F0, 0x1E2F9),
    (0x1E950, 0x1E959),
    (0x1FBF0, 0x1FBF9),
];

/// Python `re` `\d` on a `str` pattern: any Unicode decimal digit, not only ASCII.
pub fn is_py_decimal_digit(c: char) -> bool {
    let cp = c as u32;
    if cp < 0x80 {
        return c.is_ascii_digit();
    }
    DECIMAL_DIGIT_RANGES
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Python `str.lower()`. Rust's full lower-casing (multi-char expansions such as U+0130, final sigma in
/// context) agrees with CPython's on every code point of Unicode 14.0; letters added to Unicode later are
/// unknown to the reference interpreter and stay as they are there.
pub fn py_lower(s: &str) -> String {
    if s.chars().all(|c| !is_newer_than_unicode_14_cased(c)) {
        return s.to_lowercase();
    }
    // Rare path: lower-case piecewise, leaving the newer letters alone.
    let mut out = String::with_capacity(s.len());
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if is_newer_than_unicode_14_cased(c) {
            out.push_str(&s[start..i].to_lowercase());
            out.push(c);
            start = i + c.len_utf8();
        }
    }
    out.push_str(&s[start..].to_lowercase());
    out
}

/// Upper-case letters that Rust's (newer) Unicode tables lower-case but Unicode 14.0 did not know,
/// found by comparing `to_lowercase` with CPython 3.11 over every code point.
fn is_newer_than_unicode_14_cased(c: char) -> bool {
    let cp = c as u32;
    NEWER_UPPERCASE.contains(&cp)
        || (0x10D50..=0x10D65).contains(&cp) // Garay capitals (Unicode 16.0)
        || (0x16EA0..=0x16EB8).contains(&cp) // Beria Erfe capitals (Unicode 17.0)
}

/// Single capitals from Unicode 15.0-17.0 (Latin Extended-D, Cyrillic Extended-C).
const NEWER_UPPERCASE: [u32; 9] =
    [0x1C89, 0xA7CB, 0xA7CC, 0xA7CD, 0xA7CE, 0xA7D2, 0xA7D4, 0xA7DA, 0xA7DC];

/// Python `round(x, 2)` for a float: correctly rounded, ties to even, on the exact binary value (CPython
/// formats with `_Py_dg_dtoa` mode 3 and parses back). Rust's exact `{:.2}` formatting rounds the same way
/// (half-to-even on the exact value since Rust 1.67), and parsing the shortest decimal gives the same double.
pub fn py_round2(x: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.2}").parse().unwrap_or(x)
}

/// How CPython's built-in `sum()` adds floats, which changed in 3.12 and can move the official VQA score
/// by 0.01 (`tests/fixtures/vqa-summation`: 55.63 with 3.11, 55.62 with 3.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PythonSum {
    /// CPython <= 3.11: a plain left fold in f64.
    #[default]
    LeftFold,
    /// CPython >= 3.12: Neumaier-compensated for floats; ints met after the first float are still added
    /// plainly, and ints before it are summed exactly, then added to that float without compensation.
    Neumaier,
}

/// An item of a Python list being summed: the VQA scorer's lists mix the int `1` (from `min(1, x)`) and floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PyNum {
    Int(i64),
    Float(f64),
}

/// `float(sum(items))` with CPython's `sum` semantics (start value int 0).
pub fn py_sum(items: impl IntoIterator<Item = PyNum>, mode: PythonSum) -> f64 {
    let mut items = items.into_iter();
    // Int phase: exact integer sum until the first float.
    let mut int_sum: i64 = 0;
    let mut f = loop {
        match items.next() {
            None => return int_sum as f64,
            Some(PyNum::Int(v)) => int_sum += v,
            Some(PyNum::Float(x)) => break int_sum as f64 + x,
        }
    };
    let mut c = 0.0f64;
    for item in items {
        match (item, mode) {
            (PyNum::Int(v), _) => f += v as f64,
            (PyNum::Float(x), PythonSum::LeftFold) => f += x,
            (PyNum::Float(x), PythonSum::Neumaier) => {
                let t = f + x;
                c += if f.abs() >= x.abs() { (f - t) + x } else { (x - t) + f };
                f = t;
            }
        }
    }
    if c != 0.0 && c.is_finite() {
        f += c;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_matches_python_on_binary_ties() {
        // Values from CPython 3.11: round(v, 2).
        for (v, want) in [
            (0.125, 0.12),
            (0.375, 0.38),
            (2.675, 2.67),
            (12.345, 12.35),
            (66.66666666666667, 66.67),
            (1.005, 1.0),
            (0.0, 0.0),
            (100.0, 100.0),
            (30.000000000000004, 30.0),
        ] {
            assert_eq!(py_round2(v), want, "{v}");
        }
    }

    #[test]
    fn sum_semantics_of_cpython_311_and_312() {
        use PyNum::{Float, Int};
        // Observed: sum([0.0, 1e16, 1, -1e16]) is 0.0 on 3.11-3.13; with 1.0 instead of 1 it is 1.0 on 3.12+.
        let ints = [Float(0.0), Float(1e16), Int(1), Float(-1e16)];
        let floats = [Float(0.0), Float(1e16), Float(1.0), Float(-1e16)];
        assert_eq!(py_sum(ints, PythonSum::Neumaier), 0.0);
        assert_eq!(py_sum(floats, PythonSum::LeftFold), 0.0);
        assert_eq!(py_sum(floats, PythonSum::Neumaier), 1.0);
        // sum([1, 1e16, 1.0, -1e16]) == 1.0 on 3.12+: the leading int is absorbed uncompensated.
        assert_eq!(
            py_sum([Int(1), Float(1e16), Float(1.0), Float(-1e16)], PythonSum::Neumaier),
            1.0
        );
        assert_eq!(py_sum([Int(2), Int(3)], PythonSum::Neumaier), 5.0);
    }

    #[test]
    fn whitespace_and_digits() {
        assert!(is_py_space('\u{1c}') && is_py_space('\u{a0}') && is_py_space('\u{3000}'));
        assert!(!is_py_space('\u{200b}') && !is_py_space('\u{180e}'));
        assert!(is_py_decimal_digit('٣') && is_py_decimal_digit('𝟙') && !is_py_decimal_digit('²'));
        assert_eq!(py_split(" a\u{a0}b\tc  ").collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(py_strip("\u{1f} x \u{85}"), "x");
    }
}
