//! LAVIS `BlipCaptionProcessor` / `BlipQuestionProcessor` text cleaning
//! (`lavis/processors/blip_processors.py`). The two differ on purpose: captions replace the
//! symbols by a space and collapse whitespace runs; questions delete them and only rstrip.

const SYMBOLS: [char; 10] = ['.', '!', '"', '(', ')', '*', '#', ':', ';', '~'];

/// Python's `\s` for `str` (Unicode White_Space plus the ASCII separators \x1c-\x1f).
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn keep_first_words(text: String, max_words: usize) -> String {
    // Python `str.split(" ")`: empty pieces count as words.
    let words: Vec<&str> = text.split(' ').collect();
    if words.len() > max_words {
        words[..max_words].join(" ")
    } else {
        text
    }
}

/// `BlipCaptionProcessor(prompt, max_words)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionCleaner {
    pub prompt: String,
    pub max_words: usize,
    /// Keep the caption as written (LLaVA reads captions raw): no lowercasing, no punctuation
    /// stripping, no word limit.
    pub verbatim: bool,
}

impl Default for CaptionCleaner {
    fn default() -> Self {
        CaptionCleaner { prompt: String::new(), max_words: 50, verbatim: false }
    }
}

impl CaptionCleaner {
    pub fn new(prompt: impl Into<String>, max_words: usize) -> Self {
        CaptionCleaner { prompt: prompt.into(), max_words, verbatim: false }
    }

    /// Captions as written, with no prompt.
    pub fn verbatim() -> Self {
        CaptionCleaner { verbatim: true, ..Self::default() }
    }

    /// `prompt + pre_caption(caption)`.
    pub fn clean(&self, caption: &str) -> String {
        if self.verbatim {
            return format!("{}{caption}", self.prompt);
        }
        format!("{}{}", self.prompt, pre_caption(caption, self.max_words))
    }
}

/// BLIP `pre_caption`.
pub fn pre_caption(caption: &str, max_words: usize) -> String {
    let lowered: String = caption
        .to_lowercase()
        .chars()
        .map(|c| if SYMBOLS.contains(&c) { ' ' } else { c })
        .collect();
    // re.sub(r"\s{2,}", " ", ..): only runs of two or more become one space; a lone tab stays.
    let chars: Vec<char> = lowered.chars().collect();
    let mut collapsed = String::with_capacity(lowered.len());
    let mut i = 0;
    while i < chars.len() {
        if is_py_space(chars[i]) {
            let mut j = i;
            while j < chars.len() && is_py_space(chars[j]) {
                j += 1;
            }
            if j - i >= 2 {
                collapsed.push(' ');
            } else {
                collapsed.push(chars[i]);
            }
            i = j;
        } else {
            collapsed.push(chars[i]);
            i += 1;
        }
    }
    let trimmed = collapsed.trim_end_matches('\n').trim_matches(' ').to_string();
    keep_first_words(trimmed, max_words)
}

/// BLIP `pre_question`.
pub fn pre_question(question: &str, max_words: usize) -> String {
    let deleted: String =
        question.to_lowercase().chars().filter(|c| !SYMBOLS.contains(c)).collect();
    keep_first_words(deleted.trim_end_matches(' ').to_string(), max_words)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, pre_caption, pre_caption max 5, pre_question, pre_question max 5), printed by
    /// `tools/lavis_text_cases.py` running the LAVIS functions.
    const CASES: &[(&str, &str, &str, &str, &str)] = &[
        (
            "A photo of two cats laying on a pink blanket!",
            "a photo of two cats laying on a pink blanket",
            "a photo of two cats",
            "a photo of two cats laying on a pink blanket",
            "a photo of two cats",
        ),
        (
            "  Hello,   World... (test) #1: it's a t-shirt; ok~  ",
            "hello, world test 1 it's a t-shirt ok",
            "hello, world test 1 it's",
            "  hello,   world test 1 it's a t-shirt ok",
            "  hello,  ",
        ),
        (
            "Line one.\nLine two\n",
            "line one line two",
            "line one line two",
            "line one\nline two\n",
            "line one\nline two\n",
        ),
        (
            "tab\tseparated\t\twords",
            "tab\tseparated words",
            "tab\tseparated words",
            "tab\tseparated\t\twords",
            "tab\tseparated\t\twords",
        ),
        (
            "What's on the table?",
            "what's on the table?",
            "what's on the table?",
            "what's on the table?",
            "what's on the table?",
        ),
        (
            "Is the man's shirt RED??  ",
            "is the man's shirt red??",
            "is the man's shirt red??",
            "is the man's shirt red??",
            "is the man's shirt red??",
        ),
        (
            "\"Quoted\" *stars* and ~tilde~",
            "quoted stars and tilde",
            "quoted stars and tilde",
            "quoted stars and tilde",
            "quoted stars and tilde",
        ),
        (
            "ÉCOLE Straße ΣΟΦΟΣ",
            "école straße σοφος",
            "école straße σοφος",
            "école straße σοφος",
            "école straße σοφος",
        ),
        (
            "trailing newline only\n",
            "trailing newline only",
            "trailing newline only",
            "trailing newline only\n",
            "trailing newline only\n",
        ),
        ("a.b.c", "a b c", "a b c", "abc", "abc"),
        ("single\ttab", "single\ttab", "single\ttab", "single\ttab", "single\ttab"),
        ("   ", "", "", "", ""),
    ];

    #[test]
    fn matches_lavis_on_tricky_strings() {
        for (input, cap, cap5, q, q5) in CASES {
            assert_eq!(pre_caption(input, 50), *cap, "pre_caption({input:?})");
            assert_eq!(pre_caption(input, 5), *cap5, "pre_caption({input:?}, 5)");
            assert_eq!(pre_question(input, 50), *q, "pre_question({input:?})");
            assert_eq!(pre_question(input, 5), *q5, "pre_question({input:?}, 5)");
        }
    }

    #[test]
    fn truncates_to_max_words_and_prepends_prompt() {
        let long: Vec<String> = (0..60).map(|i| format!("w{i}")).collect();
        let cleaned = pre_caption(&long.join(" "), 50);
        assert_eq!(cleaned, long[..50].join(" "));
        let c = CaptionCleaner::new("a photo of ", 50);
        assert_eq!(c.clean("Two Dogs."), "a photo of two dogs");
    }
}
