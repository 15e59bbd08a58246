//! METEOR 1.5's aligner (`edu.cmu.meteor.aligner.Aligner`): candidate matches from each module in turn
//! (exact, stem, synonym, paraphrase), matches that are the only one covering their words fixed up front,
//! then a beam search (width 40) over the reference positions for the alignment with the most matched words,
//! then the fewest chunks, then the least distortion.
//!
//! Ported with the original's quirks, since they decide ties: the search weights matches by 1.0 (exact) and
//! 0.5 (others) but keeps the running totals in Java `int`s, so a one-word stem or synonym match adds
//! nothing to the total the search ranks by; when a path branches, each new branch inherits the distance of
//! the branches created before it (the original adds each branch's distance to the path it copies from).

use super::resources::{Paraphrases, Synonyms};

/// One METEOR matcher, in the order English runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Module {
    Exact,
    Stem,
    Synonym,
    Paraphrase,
}

impl Module {
    pub fn name(self) -> &'static str {
        match self {
            Module::Exact => "exact",
            Module::Stem => "stem",
            Module::Synonym => "synonym",
            Module::Paraphrase => "paraphrase",
        }
    }
    /// The weight the search ranks partial alignments by (`MeteorScorer` resets the aligner's weights).
    fn search_weight(self) -> f64 {
        match self {
            Module::Exact => 1.0,
            _ => 0.5,
        }
    }
}

const BEAM_SIZE: usize = 40;

/// A match of `length` reference words at `start` with `match_length` test words at `match_start`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    pub start: usize,
    pub length: usize,
    pub match_start: usize,
    pub match_length: usize,
    /// Index of the module (in the aligner's module list) that made it.
    pub module: usize,
}

/// What the matchers need besides the words.
pub struct Matchers<'a> {
    pub modules: &'a [Module],
    pub stem: &'a dyn Fn(&str) -> String,
    pub synonyms: Option<&'a Synonyms>,
    pub paraphrases: Option<&'a Paraphrases>,
}

/// The best alignment of a test (line 1) with a reference (line 2): the match starting at each reference
/// position, if any.
pub struct Alignment {
    pub matches: Vec<Option<Match>>,
}

struct Stage {
    matches: Vec<Vec<Match>>,
    line1_coverage: Vec<u32>,
    line2_coverage: Vec<u32>,
}

impl Stage {
    fn add(&mut self, m: Match) {
        for k in 0..m.match_length {
            self.line1_coverage[m.match_start + k] += 1;
        }
        for k in 0..m.length {
            self.line2_coverage[m.start + k] += 1;
        }
        self.matches[m.start].push(m);
    }
}

fn one_word(module: usize, j: usize, i: usize) -> Match {
    Match { start: j, length: 1, match_start: i, match_length: 1, module }
}

fn exact_matches(stage: &mut Stage, module: usize, words1: &[String], words2: &[String]) {
    for (j, w2) in words2.iter().enumerate() {
        for (i, w1) in words1.iter().enumerate() {
            if w1 == w2 {
                stage.add(one_word(module, j, i));
            }
        }
    }
}

fn stem_matches(
    stage: &mut Stage,
    module: usize,
    words1: &[String],
    words2: &[String],
    stem: &dyn Fn(&str) -> String,
) {
    let stems1: Vec<String> = words1.iter().map(|w| stem(w)).collect();
    let stems2: Vec<String> = words2.iter().map(|w| stem(w)).collect();
    for j in 0..words2.len() {
        for i in 0..words1.len() {
            if stems1[i] == stems2[j] && words1[i] != words2[j] {
                stage.add(one_word(module, j, i));
            }
        }
    }
}

fn synonym_matches(
    stage: &mut Stage,
    module: usize,
    words1: &[String],
    words2: &[String],
    synonyms: &Synonyms,
) {
    let sets1: Vec<_> = words1.iter().map(|w| synonyms.synsets_with_stems(w)).collect();
    let sets2: Vec<_> = words2.iter().map(|w| synonyms.synsets_with_stems(w)).collect();
    for j in 0..words2.len() {
        for i in 0..words1.len() {
            if words1[i] != words2[j] && sets1[i].iter().any(|s| sets2[j].contains(s)) {
                stage.add(one_word(module, j, i));
            }
        }
    }
}

/// Phrases of either line whose paraphrase occurs in the other, reference-side phrases first.
fn paraphrase_matches(
    stage: &mut Stage,
    module: usize,
    words1: &[String],
    words2: &[String],
    table: &Paraphrases,
) {
    let line1 = table.word_ids(words1);
    let line2 = table.word_ids(words2);
    let occurs = |line: &[Option<u32>], at: usize, phrase: &[u32]| {
        phrase.iter().enumerate().all(|(k, w)| line.get(at + k).copied().flatten() == Some(*w))
    };
    for j in 0..line2.len() {
        for (len, paraphrase) in table.phrases_starting_at(&line2, j) {
            for i in 0..line1.len() {
                if occurs(&line1, i, paraphrase) {
                    stage.add(Match {
                        start: j,
                        length: len,
                        match_start: i,
                        match_length: paraphrase.len(),
                        module,
                    });
                }
            }
        }
    }
    for i in 0..line1.len() {
        for (len, paraphrase) in table.phrases_starting_at(&line1, i) {
            for j in 0..line2.len() {
                if occurs(&line2, j, paraphrase) {
                    stage.add(Match {
                        start: j,
                        length: paraphrase.len(),
                        match_start: i,
                        match_length: len,
                        module,
                    });
                }
            }
        }
    }
}

/// A search state (`PartialAlignment`); `last_match_end` is the original's -1 as `None`.
#[derive(Clone)]
struct Path {
    matches: Vec<Option<Match>>,
    matches1: i32,
    matches2: i32,
    chunks: i32,
    idx: usize,
    last_match_end: Option<usize>,
    distance: i64,
    used1: Vec<bool>,
    used2: Vec<bool>,
}

impl Path {
    fn is_used(&self, m: &Match) -> bool {
        (0..m.length).any(|k| self.used2[m.start + k])
            || (0..m.match_length).any(|k| self.used1[m.match_start + k])
    }
    fn set_used(&mut self, m: &Match) {
        for k in 0..m.length {
            self.used2[m.start + k] = true;
        }
        for k in 0..m.match_length {
            self.used1[m.match_start + k] = true;
        }
    }
    /// Add a match to the running totals as the original does: `int += double` truncates.
    fn take(&mut self, m: &Match, modules: &[Module]) {
        let w = modules[m.module].search_weight();
        self.matches1 = (self.matches1 as f64 + m.match_length as f64 * w) as i32;
        self.matches2 = (self.matches2 as f64 + m.length as f64 * w) as i32;
        if self.last_match_end.is_some_and(|end| m.match_start != end) {
            self.chunks += 1;
        }
        self.idx = m.start + m.length;
        self.last_match_end = Some(m.match_start + m.match_length);
    }
}

/// `Constants.PARTIAL_COMPARE_TOTAL`: more (weighted) matches, then fewer chunks, then less distance.
fn compare(x: &Path, y: &Path) -> std::cmp::Ordering {
    (y.matches1 + y.matches2)
        .cmp(&(x.matches1 + x.matches2))
        .then(x.chunks.cmp(&y.chunks))
        .then(x.distance.cmp(&y.distance))
}

/// Align `words1` (test) with `words2` (reference).
pub fn align(words1: &[String], words2: &[String], matchers: &Matchers<'_>) -> Alignment {
    let mut stage = Stage {
        matches: vec![Vec::new(); words2.len()],
        line1_coverage: vec![0; words1.len()],
        line2_coverage: vec![0; words2.len()],
    };
    // Identical lines: exact matching alone.
    let modules_used = if words1 == words2 { 1 } else { matchers.modules.len() };
    for (index, module) in matchers.modules.iter().take(modules_used).enumerate() {
        match module {
            Module::Exact => exact_matches(&mut stage, index, words1, words2),
            Module::Stem => stem_matches(&mut stage, index, words1, words2, matchers.stem),
            Module::Synonym => {
                if let Some(synonyms) = matchers.synonyms {
                    synonym_matches(&mut stage, index, words1, words2, synonyms)
                }
            }
            Module::Paraphrase => {
                if let Some(table) = matchers.paraphrases {
                    paraphrase_matches(&mut stage, index, words1, words2, table)
                }
            }
        }
    }
    let mut start = Path {
        matches: vec![None; words2.len()],
        matches1: 0,
        matches2: 0,
        chunks: 0,
        idx: 0,
        last_match_end: None,
        distance: 0,
        used1: vec![false; words1.len()],
        used2: vec![false; words2.len()],
    };
    // Fix every match that is the only one covering all of its words.
    for (i, candidates) in stage.matches.iter().enumerate() {
        if let [m] = candidates.as_slice() {
            let unique = (0..m.length).all(|k| stage.line2_coverage[i + k] == 1)
                && (0..m.match_length).all(|k| stage.line1_coverage[m.match_start + k] == 1);
            if unique {
                start.matches[i] = Some(*m);
                start.set_used(m);
            }
        }
    }
    Alignment { matches: resolve(&stage, start, matchers.modules) }
}

fn resolve(stage: &Stage, start: Path, modules: &[Module]) -> Vec<Option<Match>> {
    let n = stage.matches.len();
    let mut next_paths = vec![start];
    for current in 0..=n {
        let mut paths = std::mem::take(&mut next_paths);
        paths.sort_by(compare);
        let fallback = paths[0].clone();
        for mut path in paths.into_iter().take(BEAM_SIZE) {
            if current == n {
                if path.last_match_end.is_some() {
                    path.chunks += 1;
                }
                next_paths.push(path);
                continue;
            }
            if path.used2[current] {
                if current < path.idx {
                    next_paths.push(path);
                } else if let Some(m) = path.matches.get(path.idx).copied().flatten() {
                    path.take(&m, modules);
                    path.distance += (m.start as i64 - m.match_start as i64).abs();
                    next_paths.push(path);
                }
                continue;
            }
            for m in &stage.matches[current] {
                if path.is_used(m) {
                    continue;
                }
                let mut branch = path.clone();
                branch.set_used(m);
                branch.matches[current] = Some(*m);
                branch.take(m, modules);
                // The original adds the distance to the path being branched from, not to the branch.
                path.distance += (m.start as i64 - m.match_start as i64).abs();
                next_paths.push(branch);
            }
            if path.last_match_end.is_some() {
                path.chunks += 1;
                path.last_match_end = None;
            }
            path.idx += 1;
            next_paths.push(path);
        }
        if next_paths.is_empty() {
            next_paths.push(fallback);
        }
    }
    next_paths.sort_by(compare);
    next_paths.swap_remove(0).matches
}

/// `getCountAndChunks`: matched words on each side and the number of chunks of the final alignment.
pub fn count_chunks(matches: &[Option<Match>]) -> usize {
    let mut chunks = 0;
    let mut idx = 0;
    let mut last_match_end: Option<usize> = None;
    while idx < matches.len() {
        match matches[idx] {
            None => {
                if last_match_end.is_some() {
                    chunks += 1;
                    last_match_end = None;
                }
                idx += 1;
            }
            Some(m) => {
                if last_match_end.is_some_and(|end| m.match_start != end) {
                    chunks += 1;
                }
                idx = m.start + m.length;
                last_match_end = Some(m.match_start + m.match_length);
            }
        }
    }
    if last_match_end.is_some() {
        chunks += 1;
    }
    chunks
}
