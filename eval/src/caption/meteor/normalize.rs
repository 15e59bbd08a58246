//! METEOR 1.5's `-norm` text normalisation for English (`Normalizer.normalizeLine` with punctuation kept,
//! then lower case), applied by METEOR to every hypothesis and reference it is given.
//!
//! pycocoevalcap hands METEOR captions that the PTB tokenizer already split, but `-norm` still rewrites
//! them: `n't` becomes `n 't`, `'s` after a space becomes `' s`, hyphens between letters or digits become
//! spaces (`12-year-old` -> `12 year old`), dotted acronyms lose their dots (`u.s.a.` -> `usa`), a final
//! period of an unlisted word splits off. The regular expressions are Moses-tokenizer rules as METEOR writes
//! them; Java's `\s`, `\p{Digit}` and `\p{Lower}` are ASCII classes, spelled out here.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

/// Letters as METEOR lists them (Western European and Cyrillic ranges).
const ALPHA: &str = "A-Za-zŠŽšžŸÀ-ÖØ-öø-žЀ-ӿԀ-ԧꙀ-ꙮ꙾-ꚗᴀ-ᵿ";
/// Java's `\s`.
const JAVA_SPACE: &str = r" \t\n\x0B\x0C\r";

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("METEOR normaliser pattern")
}

struct Patterns {
    sep_other: Regex,
    multi_dot: Regex,
    multi_dot2: Regex,
    comma: [Regex; 3],
    quote_single: Regex,
    quote_double: Regex,
    rm_dash: Regex,
    contractions: [(Regex, &'static str); 5],
    has_alpha: Regex,
    starts_lower: Regex,
    starts_digit: Regex,
    white: Regex,
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| {
    let alnum = format!("0-9{ALPHA}");
    Patterns {
        sep_other: re(&format!(r"([^{alnum}{JAVA_SPACE}\.'`,\-‘’])")),
        multi_dot: re(r"\.(\.+)"),
        multi_dot2: re(r"DOTMULTI\.([^\.])"),
        comma: [re(r"([^0-9]),([^0-9])"), re(r"([0-9]),([^0-9])"), re(r"([^0-9]),([0-9])")],
        quote_single: re("[`‘’]"),
        quote_double: re("[“”]|''"),
        rm_dash: re(&format!(r"([{alnum}\.])-([{alnum}])")),
        contractions: [
            (re(&format!("([^{ALPHA}])'([^{ALPHA}])")), "${1} ' ${2}"),
            (re(&format!("([^{ALPHA}0-9])'([{ALPHA}])")), "${1} ' ${2}"),
            (re(&format!("([{ALPHA}])'([^{ALPHA}])")), "${1} ' ${2}"),
            (re(&format!("([{ALPHA}])'([{ALPHA}])")), "${1} '${2}"),
            (re("([0-9])'(s)"), "${1} '${2}"),
        ],
        has_alpha: re(&format!("[{ALPHA}]")),
        starts_lower: re("^[a-z]"),
        starts_digit: re("^[0-9]+"),
        white: re("[  \u{2000}-\u{200A}\u{202F}\u{205F}\u{3000}\u{00A0}]+"),
    }
});

/// How a nonbreaking prefix keeps its period: always, or only before a number.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Nonbreaking {
    Any,
    NumericOnly,
}

static NONBREAKING: LazyLock<HashMap<String, Nonbreaking>> = LazyLock::new(|| {
    let mut prefixes = HashMap::new();
    for line in include_str!("data/english.nonbreaking-prefixes").lines() {
        let mut parts = line.split_whitespace();
        let Some(prefix) = parts.next() else { continue };
        if prefix.starts_with('#') {
            continue;
        }
        let kind = if parts.next() == Some("#NUMERIC_ONLY#") {
            Nonbreaking::NumericOnly
        } else {
            Nonbreaking::Any
        };
        prefixes.insert(prefix.to_string(), kind);
    }
    prefixes
});

/// Java's `String.trim`: strips every char up to U+0020 at both ends.
fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

/// `Normalizer.normalizeLine(line, LANG_EN, keepPunctuation = true)` followed by `toLowerCase()`.
pub fn meteor_normalize(line: &str) -> String {
    let p = &*PATTERNS;
    let mut s = format!(" {line} ");
    s = p.sep_other.replace_all(&s, " ${1} ").into_owned();
    s = p.multi_dot.replace_all(&s, " DOTMULTI${1}").into_owned();
    while s.contains("DOTMULTI.") {
        s = p.multi_dot2.replace_all(&s, "DOTDOTMULTI ${1}").into_owned();
        s = s.replace("DOTMULTI.", "DOTDOTMULTI");
    }
    for comma in &p.comma {
        s = comma.replace_all(&s, "${1} , ${2}").into_owned();
    }
    s = p.quote_single.replace_all(&s, "'").into_owned();
    s = p.quote_double.replace_all(&s, " \" ").into_owned();
    s = s.replace('–', "-").replace("--", "-");
    s = p.rm_dash.replace_all(&s, "${1} ${2}").into_owned();
    for (pattern, replacement) in &p.contractions {
        s = pattern.replace_all(&s, *replacement).into_owned();
    }
    let words: Vec<&str> =
        s.split([' ', '\t', '\n', '\r', '\x0C']).filter(|w| !w.is_empty()).collect();
    let mut rebuilt = String::with_capacity(s.len() + 8);
    for (i, word) in words.iter().enumerate() {
        let next = words.get(i + 1);
        if word.chars().count() > 1 && word.ends_with('.') {
            let prefix = &word[..word.len() - 1];
            let kind = NONBREAKING.get(prefix).copied();
            if prefix.contains('.') && p.has_alpha.is_match(prefix) {
                rebuilt.push_str(&word.replace('.', ""));
            } else if kind == Some(Nonbreaking::Any)
                || next.is_some_and(|n| p.starts_lower.is_match(n))
                || (kind == Some(Nonbreaking::NumericOnly)
                    && next.is_some_and(|n| p.starts_digit.is_match(n)))
            {
                rebuilt.push_str(word);
            } else {
                rebuilt.push_str(prefix);
                rebuilt.push_str(" .");
            }
        } else {
            rebuilt.push_str(word);
        }
        rebuilt.push(' ');
    }
    s = rebuilt;
    while s.contains("DOTDOTMULTI") {
        s = s.replace("DOTDOTMULTI", "DOTMULTI.");
    }
    s = s.replace("DOTMULTI", ".");
    s = p.white.replace_all(&s, " ").into_owned();
    java_trim(&s).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_ptb_tokens_the_way_meteor_does() {
        assert_eq!(meteor_normalize("a man 's dog ca n't run"), "a man ' s dog ca n 't run");
        assert_eq!(meteor_normalize("a 12-year-old t-shirt"), "a 12 year old t shirt");
        assert_eq!(meteor_normalize("u.s.a. and mr. smith"), "usa and mr. smith");
        assert_eq!(meteor_normalize("3.5 meters 1,000 people"), "3.5 meters 1,000 people");
        assert_eq!(meteor_normalize("the end."), "the end .");
        assert_eq!(meteor_normalize(""), "");
    }
}
