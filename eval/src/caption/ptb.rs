//! The tokenizer every COCO caption metric sees: Stanford CoreNLP 3.4.1 `PTBTokenizer -preserveLines
//! -lowerCase`, then pycocoevalcap's punctuation drop list.
//!
//! CoreNLP's lexer is a large JFlex grammar; this is a port of the rules that decide caption tokens: at each
//! position the longest lexeme of any rule wins (ties go to the earlier rule, as in JFlex), then PTB3
//! normalisation (brackets to `-lrb-`.., quotes to `` `` `` / `''`, dashes to `--`, `…` to `...`, fractions,
//! currency), contraction splitting and lower-casing. Characters outside the Basic Multilingual Plane (emoji)
//! and the emoji variation selector are deleted, as CoreNLP 3.4.1 does with characters it has no rule for;
//! accents are kept as written (no Unicode normalisation). Only the final tokens matter to the scorers, so
//! where CoreNLP's choice between two dropped tokens (`` ` `` or `'`) is not obvious either is fine.

/// Tokens pycocoevalcap removes after CoreNLP (its `PUNCTUATIONS`). The bracket names are upper case while
/// CoreNLP's output is lower-cased, so `-lrb-` and friends survive and count as words, as in the reference.
pub const DROPPED_PUNCTUATION: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// A caption as pycocoevalcap's scorers see it: PTB tokens, lower case, punctuation dropped.
pub fn tokenize_caption(caption: &str) -> Vec<String> {
    ptb_tokens(caption).into_iter().filter(|t| !DROPPED_PUNCTUATION.contains(&t.as_str())).collect()
}

/// The tokens joined by single spaces: the string every scorer of pycocoevalcap receives.
pub fn tokenized_caption_string(caption: &str) -> String {
    tokenize_caption(caption).join(" ")
}

/// CoreNLP's own output (`-preserveLines -lowerCase`), before the punctuation drop list.
pub fn ptb_tokens(caption: &str) -> Vec<String> {
    let chars: Vec<char> = caption.chars().filter(|c| !is_deleted(*c)).collect();
    let mut tokens = Vec::new();
    let mut pos = 0;
    while pos < chars.len() {
        if is_space(chars[pos]) {
            pos += 1;
            continue;
        }
        let (len, rule) = longest_lexeme(&chars, pos);
        let lexeme: String = chars[pos..pos + len].iter().collect();
        emit(&lexeme, rule, &chars, pos, &mut tokens);
        pos += len;
    }
    tokens
}

/// Characters CoreNLP 3.4.1 drops: anything outside the BMP (emoji, skin-tone modifiers) and the emoji
/// presentation selector left behind by `❤️`.
fn is_deleted(c: char) -> bool {
    (c as u32) > 0xFFFF || c == '\u{FE0F}' || c == '\u{FE0E}' || c == '\u{200D}'
}

/// Token separators: ASCII whitespace (a caption's newline is already a space in pycocoevalcap), NBSP and the
/// other Unicode spaces.
fn is_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{00A0}' || c == '\u{2007}' || c == '\u{202F}'
}

fn is_letter(c: char) -> bool {
    c.is_alphabetic() || is_mark(c)
}

/// Combining marks (a decomposed accent stays inside its word).
fn is_mark(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

/// Vulgar fractions are numeric to Unicode but symbols to CoreNLP (which spells them out).
fn is_alnum(c: char) -> bool {
    is_letter(c)
        || (c.is_numeric() && !matches!(c, '\u{00BC}'..='\u{00BE}' | '\u{2150}'..='\u{215F}'))
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit()
}

fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '\u{2019}'
}

/// The lexer rules, in JFlex priority order (earlier wins a tie in length).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    /// `<angle>`: an SGML-like tag is one token.
    Sgml,
    /// `'n'`, `'90s`, `'em`: apostrophe-initial words.
    ApostropheWord,
    /// Letters and digits, joined by single inner hyphens, `&`, `/`, and apostrophes between letters.
    Word,
    /// `3.5`, `1,000`, `10:30`, `3/4`, `-3`, `+4`.
    Number,
    /// `u.s.a.`: single letters each followed by a dot.
    Acronym,
    /// `mr.`: a known abbreviation keeps its dot.
    Abbreviation,
    /// `hello.world`, `it.i`: letter-initial parts joined by dots.
    DottedWord,
    /// `@user`, `#tag`.
    Handle,
    /// `...`, `…`.
    Ellipsis,
    /// `!!!`, `?!`: runs of `!` and `?` stay one token.
    Exclamation,
    /// `--`, `—`, `–`.
    Dash,
    /// Any other single character: `$`, `%`, `#`, `.`, quotes, brackets, symbols.
    Other,
}

const RULES: [Rule; 12] = [
    Rule::Sgml,
    Rule::ApostropheWord,
    Rule::Word,
    Rule::Number,
    Rule::Acronym,
    Rule::Abbreviation,
    Rule::DottedWord,
    Rule::Handle,
    Rule::Ellipsis,
    Rule::Exclamation,
    Rule::Dash,
    Rule::Other,
];

/// Abbreviations whose period is part of the token.
const ABBREVIATIONS: [&str; 34] = [
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "inc", "co", "corp", "ltd",
    "mt", "ave", "gen", "gov", "sen", "rep", "col", "lt", "sgt", "capt", "jan", "feb", "mar",
    "apr", "jun", "jul", "aug", "sep", "oct", "nov",
];

fn longest_lexeme(chars: &[char], pos: usize) -> (usize, Rule) {
    let mut best = (0, Rule::Other);
    for rule in RULES {
        let len = match_rule(rule, chars, pos);
        if len > best.0 {
            best = (len, rule);
        }
    }
    if best.0 == 0 {
        (1, Rule::Other)
    } else {
        best
    }
}

fn at(chars: &[char], i: usize) -> Option<char> {
    chars.get(i).copied()
}

fn match_rule(rule: Rule, chars: &[char], pos: usize) -> usize {
    match rule {
        Rule::Sgml => sgml_len(chars, pos),
        Rule::ApostropheWord => apostrophe_word_len(chars, pos),
        Rule::Word => word_len(chars, pos),
        Rule::Number => number_len(chars, pos),
        Rule::Acronym => acronym_len(chars, pos),
        Rule::Abbreviation => abbreviation_len(chars, pos),
        Rule::DottedWord => dotted_word_len(chars, pos),
        Rule::Handle => handle_len(chars, pos),
        Rule::Ellipsis => {
            run_len(chars, pos, |c| c == '.', 2).max(run_len(chars, pos, |c| c == '…', 1))
        }
        Rule::Exclamation => run_len(chars, pos, |c| c == '!' || c == '?', 1),
        Rule::Dash => {
            run_len(chars, pos, |c| c == '-', 2).max(run_len(chars, pos, is_long_dash, 1))
        }
        Rule::Other => 1,
    }
}

fn is_long_dash(c: char) -> bool {
    matches!(c, '\u{2012}'..='\u{2015}')
}

fn run_len(chars: &[char], pos: usize, pred: impl Fn(char) -> bool, min: usize) -> usize {
    let n = chars[pos..].iter().take_while(|c| pred(**c)).count();
    if n >= min {
        n
    } else {
        0
    }
}

fn sgml_len(chars: &[char], pos: usize) -> usize {
    if chars[pos] != '<' {
        return 0;
    }
    let mut i = pos + 1;
    while let Some(c) = at(chars, i) {
        if c == '>' {
            return if i > pos + 1 { i + 1 - pos } else { 0 };
        }
        if c == '<' || is_space(c) {
            return 0;
        }
        i += 1;
    }
    0
}

fn apostrophe_word_len(chars: &[char], pos: usize) -> usize {
    if !is_apostrophe(chars[pos]) {
        return 0;
    }
    let rest: String = chars[pos + 1..].iter().take(6).collect::<String>().to_lowercase();
    let next_is_word = |n: usize| at(chars, pos + 1 + n).is_some_and(is_alnum);
    // 'n' (rock 'n' roll)
    if rest.starts_with('n') && rest[1..].starts_with(['\'', '\u{2019}']) && !next_is_word(2) {
        return 3;
    }
    // '90s, but not the feet-and-inches of 5'10": after a letter or digit the apostrophe
    // stands alone.
    let r: Vec<char> = rest.chars().collect();
    let after_alnum = pos > 0 && is_alnum(chars[pos - 1]);
    if after_alnum && r.first().is_some_and(|c| is_digit(*c)) {
        return 0;
    }
    if r.len() >= 3 && is_digit(r[0]) && is_digit(r[1]) && r[2] == 's' && !next_is_word(3) {
        return 4;
    }
    if r.len() >= 2 && is_digit(r[0]) && is_digit(r[1]) && !next_is_word(2) {
        return 3;
    }
    for word in ["em", "til", "cause", "tis", "twas"] {
        if rest.starts_with(word) && !next_is_word(word.chars().count()) {
            return 1 + word.chars().count();
        }
    }
    0
}

/// Letters/digits; a single `-`, `&` or `/` between two alphanumerics joins; an apostrophe joins two letters.
fn word_len(chars: &[char], pos: usize) -> usize {
    if !is_alnum(chars[pos]) {
        return 0;
    }
    let mut i = pos + 1;
    while let Some(c) = at(chars, i) {
        if is_alnum(c) {
            i += 1;
            continue;
        }
        let prev = chars[i - 1];
        let next = at(chars, i + 1);
        let joins = match c {
            '-' | '&' | '/' => next.is_some_and(is_alnum),
            c if is_apostrophe(c) => is_letter(prev) && next.is_some_and(is_letter),
            _ => false,
        };
        if !joins {
            break;
        }
        i += 2;
    }
    i - pos
}

fn number_len(chars: &[char], pos: usize) -> usize {
    let mut i = pos;
    if matches!(chars[pos], '+' | '-') {
        let after_alnum = pos > 0 && is_alnum(chars[pos - 1]);
        if after_alnum || !at(chars, pos + 1).is_some_and(is_digit) {
            return 0;
        }
        i += 1;
    }
    let digits = |i: usize| chars[i..].iter().take_while(|c| is_digit(**c)).count();
    let first = digits(i);
    if first == 0 {
        return 0;
    }
    i += first;
    while let Some(c) = at(chars, i) {
        if matches!(c, '.' | ',' | ':' | '/') && i + 1 < chars.len() && digits(i + 1) > 0 {
            i += 1 + digits(i + 1);
        } else {
            break;
        }
    }
    // 3.5-meter: a hyphen and a word after a number join it, as between words.
    while at(chars, i) == Some('-') && at(chars, i + 1).is_some_and(is_alnum) {
        i += 1 + word_len(chars, i + 1);
    }
    i - pos
}

fn acronym_len(chars: &[char], pos: usize) -> usize {
    let mut i = pos;
    let mut letters = 0;
    while at(chars, i).is_some_and(is_letter) && at(chars, i + 1) == Some('.') {
        letters += 1;
        i += 2;
    }
    if letters >= 2 && !at(chars, i).is_some_and(is_alnum) {
        i - pos
    } else {
        0
    }
}

fn abbreviation_len(chars: &[char], pos: usize) -> usize {
    if pos > 0 && is_alnum(chars[pos - 1]) {
        return 0;
    }
    let n = chars[pos..].iter().take_while(|c| c.is_alphabetic()).count();
    if n == 0 || at(chars, pos + n) != Some('.') {
        return 0;
    }
    let word: String = chars[pos..pos + n].iter().collect::<String>().to_lowercase();
    if ABBREVIATIONS.contains(&word.as_str()) && !at(chars, pos + n + 1).is_some_and(is_alnum) {
        n + 1
    } else {
        0
    }
}

fn dotted_word_len(chars: &[char], pos: usize) -> usize {
    let segment = |i: usize| -> usize {
        if !at(chars, i).is_some_and(is_letter) {
            return 0;
        }
        chars[i..].iter().take_while(|c| is_alnum(**c)).count()
    };
    let first = segment(pos);
    if first == 0 {
        return 0;
    }
    let mut i = pos + first;
    let mut parts = 1;
    while at(chars, i) == Some('.') {
        let next = segment(i + 1);
        if next == 0 {
            break;
        }
        i += 1 + next;
        parts += 1;
    }
    if parts >= 2 {
        i - pos
    } else {
        0
    }
}

fn handle_len(chars: &[char], pos: usize) -> usize {
    if !matches!(chars[pos], '@' | '#')
        || !at(chars, pos + 1).is_some_and(|c| c.is_alphabetic() || c == '_')
    {
        return 0;
    }
    1 + chars[pos + 1..].iter().take_while(|c| is_alnum(**c) || **c == '_').count()
}

/// Turn one lexeme into output tokens (PTB3 normalisation, contraction splits, lower case).
fn emit(lexeme: &str, rule: Rule, chars: &[char], pos: usize, out: &mut Vec<String>) {
    match rule {
        Rule::Word => split_word(lexeme, out),
        Rule::Ellipsis => out.push(if lexeme == ".." { "..".into() } else { "...".into() }),
        Rule::Dash => out.push("--".into()),
        Rule::Other => out.push(normalize_symbol(lexeme, chars, pos)),
        Rule::ApostropheWord => out.push(lowercase(&lexeme.replace('\u{2019}', "'"))),
        _ => out.push(lowercase(lexeme)),
    }
}

fn lowercase(s: &str) -> String {
    s.to_lowercase()
}

/// Contractions split off the end (`do n't`, `dog 's`), a few fused words split in two (`can not`,
/// `gon na`), fractions spelled out; curly apostrophes become ASCII.
fn split_word(lexeme: &str, out: &mut Vec<String>) {
    let word = lowercase(&lexeme.replace('\u{2019}', "'"));
    for (fused, head) in
        [("cannot", 3), ("gonna", 3), ("gotta", 3), ("wanna", 3), ("lemme", 3), ("gimme", 3)]
    {
        if word == fused {
            out.push(word[..head].to_string());
            out.push(word[head..].to_string());
            return;
        }
    }
    if let Some(stem) = word.strip_suffix("n't") {
        if !stem.is_empty() {
            out.push(stem.to_string());
            out.push("n't".into());
            return;
        }
    }
    for suffix in ["'s", "'m", "'d", "'re", "'ve", "'ll"] {
        if let Some(stem) = word.strip_suffix(suffix) {
            if !stem.is_empty() {
                out.push(stem.to_string());
                out.push(suffix.to_string());
                return;
            }
        }
    }
    out.push(word);
}

/// A single non-word character: brackets, quotes (opening or closing by what precedes them), fractions,
/// currency, everything else as itself.
fn normalize_symbol(lexeme: &str, chars: &[char], pos: usize) -> String {
    let c = lexeme.chars().next().unwrap_or(' ');
    let opening =
        pos == 0 || is_space(chars[pos - 1]) || matches!(chars[pos - 1], '(' | '[' | '{' | '<');
    let s = match c {
        '(' => "-lrb-",
        ')' => "-rrb-",
        '[' => "-lsb-",
        ']' => "-rsb-",
        '{' => "-lcb-",
        '}' => "-rcb-",
        '"' if opening => "``",
        '"' => "''",
        '\u{201C}' | '\u{201E}' | '\u{00AB}' => "``",
        '\u{201D}' | '\u{00BB}' => "''",
        '\u{2018}' | '`' => "`",
        '\'' | '\u{2019}' if opening => "`",
        '\'' | '\u{2019}' => "'",
        '\u{00BD}' => "1/2",
        '\u{00BC}' => "1/4",
        '\u{00BE}' => "3/4",
        '\u{2153}' => "1/3",
        '\u{2154}' => "2/3",
        '\u{00A2}' => "cents",
        '\u{00A3}' => "#",
        '\u{00A5}' | '\u{20AC}' => "$",
        _ => return lowercase(lexeme),
    };
    s.to_string()
}
