//! Answer normalisation of the official VQA scorer (the copy LAVIS ships in
//! `lavis/common/vqa_tools/vqa_eval.py`), reproduced step for step with its quirks.
//!
//! Checked against that file on hand-picked and random strings: `tests/fixtures/vqa-tricky/normalization.json`.

use super::contractions::expand_contraction;
use crate::pystr::{is_py_decimal_digit, py_lower, py_split, py_strip};

/// The symbols the punctuation pass touches, in the scorer's order. Everything else (`'`, `:`, `.`, `$`,
/// `%`, `&`, `*`, `#`, `~`, `^`, `|`, non-ASCII punctuation) is left alone here.
pub const PUNCTUATION: [char; 21] = [
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];

/// Number words the scorer turns into digits; whole tokens only ("eleven" stays).
const NUMBER_WORDS: [(&str, &str); 12] = [
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
];

const ARTICLES: [&str; 3] = ["a", "an", "the"];

/// The scorer passes `re.UNICODE` (= 32) where `re.sub` expects `count`, so at most 32 periods go.
const MAX_PERIODS_REMOVED: usize = 32;

/// `processPunctuation`. For each symbol: if the *input* has it next to a space, or the input contains
/// digit-comma-digit anywhere, every occurrence is deleted, otherwise each becomes a space. Then every
/// `.` not directly followed by a (Unicode) decimal digit is deleted, the first 32 of them only.
pub fn process_punctuation(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let digit_comma_digit = chars
        .windows(3)
        .any(|w| is_py_decimal_digit(w[0]) && w[1] == ',' && is_py_decimal_digit(w[2]));
    let mut out = text.to_string();
    for p in PUNCTUATION {
        if !out.contains(p) {
            continue;
        }
        let touches_space =
            chars.windows(2).any(|w| (w[0] == p && w[1] == ' ') || (w[0] == ' ' && w[1] == p));
        let replacement = if touches_space || digit_comma_digit { "" } else { " " };
        out = out.replace(p, replacement);
    }
    strip_periods(&out)
}

/// The period regex `(?!<=\d)(\.)(?!\d)`: its first group was meant as a look-behind but is a look-ahead
/// for the text "<=digit", which can never start at a '.', so only "not followed by a digit" counts.
/// Matches are found on the unmodified string, left to right.
fn strip_periods(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut removed = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let followed_by_digit = chars.peek().is_some_and(|&n| is_py_decimal_digit(n));
        if c == '.' && !followed_by_digit && removed < MAX_PERIODS_REMOVED {
            removed += 1;
        } else {
            out.push(c);
        }
    }
    out
}

/// `processDigitArticle`: lower-case, split on whitespace, number words to digits, drop articles, expand
/// contractions, join with single spaces.
pub fn process_digit_article(text: &str) -> String {
    let lowered = py_lower(text);
    let mut words: Vec<&str> = Vec::new();
    for word in py_split(&lowered) {
        let word = NUMBER_WORDS.iter().find(|(w, _)| *w == word).map_or(word, |(_, digit)| *digit);
        if !ARTICLES.contains(&word) {
            words.push(word);
        }
    }
    let words: Vec<&str> = words.into_iter().map(|w| expand_contraction(w).unwrap_or(w)).collect();
    words.join(" ")
}

/// What the scorer compares for a predicted answer: newlines and tabs to spaces, strip, then
/// [`process_punctuation`] and [`process_digit_article`].
pub fn normalize_prediction(answer: &str) -> String {
    let flat = answer.replace(['\n', '\t'], " ");
    process_digit_article(&process_punctuation(py_strip(&flat)))
}

/// What the scorer compares for a ground-truth answer when the question's answers are not all identical:
/// the punctuation pass only (no lower-casing, no number words, raw whitespace).
pub fn normalize_ground_truth(answer: &str) -> String {
    process_punctuation(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Input → output pairs observed by running the LAVIS 1.0.2 scorer
    // (`lavis/common/vqa_tools/vqa_eval.py`).
    #[test]
    fn documented_examples() {
        for (input, want) in [
            ("Yes.", "yes"),
            ("Two", "2"),
            ("two dogs", "2 dogs"),
            ("A dog.", "dog"),
            ("an apple a day", "apple day"),
            ("  The  ", ""),
            ("None of them", "0 of them"),
            ("1,000", "1000"),
            ("1, 000", "1 000"),
            ("hello,world", "hello world"),
            ("x-ray, 1,2", "xray 12"),
            ("U.S.A.", "usa"),
            (".5", ".5"),
            ("1.5.", "1.5"),
            ("2 1/2", "2 1 2"),
            ("e.g. cat", "eg cat"),
            ("Dont", "don't"),
            ("Im", "im"),
        ] {
            assert_eq!(normalize_prediction(input), want, "{input:?}");
        }
        assert_eq!(process_punctuation("t - shirt"), "t  shirt");
        assert_eq!(process_punctuation(&"a.".repeat(40)).matches('.').count(), 8);
    }
}
