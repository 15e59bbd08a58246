//! METEOR 1.5 as pycocoevalcap runs it (`meteor-1.5.jar - - -stdio -l en -norm`), without Java.
//!
//! Each candidate is aligned with each of its references ([`align`]), the best-scoring reference's
//! statistics are kept, and the corpus score is computed from the statistics summed over all images, as
//! METEOR's `EVAL` does: not the mean of the per-image scores. English parameters of METEOR 1.5's default
//! (ranking) task: alpha 0.85, beta 0.2, gamma 0.6, delta 0.75; module weights exact 1.0, stem 0.6,
//! synonym 0.8, paraphrase 0.6; function words from the jar.
//!
//! Exact and stem matching (Snowball English stemmer) need no data. Synonym (WordNet, as the jar ships it)
//! and paraphrase matching need METEOR's tables ([`resources`]); without them the score is that of METEOR
//! run with `-m "exact stem"`, which sits below the reference wherever a synonym or paraphrase would have
//! matched.

pub mod align;
pub mod normalize;
pub mod resources;

use std::collections::HashSet;

pub use align::Module;
pub use normalize::meteor_normalize;
pub use resources::{MeteorDataFiles, Paraphrases, Synonyms};

use align::{align, count_chunks, Matchers};

const ALPHA: f64 = 0.85;
const BETA: f64 = 0.2;
const GAMMA: f64 = 0.6;
const DELTA: f64 = 0.75;
const MAX_MODULES: usize = 4;

fn module_weight(module: Module) -> f64 {
    match module {
        Module::Exact => 1.0,
        Module::Stem => 0.6,
        Module::Synonym => 0.8,
        Module::Paraphrase => 0.6,
    }
}

/// METEOR's sufficient statistics of one test/reference pair (or their sum over a corpus), per module slot
/// in the aligner's module order, as `MeteorStats` holds them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeteorStats {
    pub test_length: f64,
    pub reference_length: f64,
    pub test_function_words: f64,
    pub reference_function_words: f64,
    pub test_content_matches: [f64; MAX_MODULES],
    pub reference_content_matches: [f64; MAX_MODULES],
    pub test_function_matches: [f64; MAX_MODULES],
    pub reference_function_matches: [f64; MAX_MODULES],
    pub chunks: f64,
    pub test_word_matches: f64,
    pub reference_word_matches: f64,
}

impl MeteorStats {
    fn test_total_matches(&self) -> f64 {
        (0..MAX_MODULES).map(|i| self.test_content_matches[i] + self.test_function_matches[i]).sum()
    }
    fn reference_total_matches(&self) -> f64 {
        (0..MAX_MODULES)
            .map(|i| self.reference_content_matches[i] + self.reference_function_matches[i])
            .sum()
    }
    /// Every word of both lines matched, in one chunk.
    fn is_perfect(&self) -> bool {
        self.test_total_matches() == self.test_length
            && self.reference_total_matches() == self.reference_length
            && self.chunks == 1.0
    }

    /// `MeteorStats.addStats`: sums, except that a perfect match adds no chunks.
    pub fn add(&mut self, other: &MeteorStats) {
        self.test_length += other.test_length;
        self.reference_length += other.reference_length;
        self.test_function_words += other.test_function_words;
        self.reference_function_words += other.reference_function_words;
        for i in 0..MAX_MODULES {
            self.test_content_matches[i] += other.test_content_matches[i];
            self.reference_content_matches[i] += other.reference_content_matches[i];
            self.test_function_matches[i] += other.test_function_matches[i];
            self.reference_function_matches[i] += other.reference_function_matches[i];
        }
        if !other.is_perfect() {
            self.chunks += other.chunks;
        }
        self.test_word_matches += other.test_word_matches;
        self.reference_word_matches += other.reference_word_matches;
    }

    /// `MeteorScorer.computeMetrics`: weighted F-mean times the fragmentation penalty; 0 where undefined.
    pub fn score(&self, modules: &[Module]) -> f64 {
        let weights: Vec<f64> = modules.iter().map(|m| module_weight(*m)).collect();
        let test_weighted_length = DELTA * (self.test_length - self.test_function_words)
            + (1.0 - DELTA) * self.test_function_words;
        let reference_weighted_length = DELTA
            * (self.reference_length - self.reference_function_words)
            + (1.0 - DELTA) * self.reference_function_words;
        let mut test_matches = 0.0;
        let mut reference_matches = 0.0;
        for (i, w) in weights.iter().enumerate() {
            test_matches += self.test_content_matches[i] * w * DELTA;
        }
        for (i, w) in weights.iter().enumerate() {
            reference_matches += self.reference_content_matches[i] * w * DELTA;
        }
        for (i, w) in weights.iter().enumerate() {
            test_matches += self.test_function_matches[i] * w * (1.0 - DELTA);
        }
        for (i, w) in weights.iter().enumerate() {
            reference_matches += self.reference_function_matches[i] * w * (1.0 - DELTA);
        }
        let precision = test_matches / test_weighted_length;
        let recall = reference_matches / reference_weighted_length;
        let f_mean = 1.0 / (((1.0 - ALPHA) / precision) + (ALPHA / recall));
        let fragmentation = if self.is_perfect() {
            0.0
        } else {
            self.chunks / ((self.test_word_matches + self.reference_word_matches) / 2.0)
        };
        let score = f_mean * (1.0 - GAMMA * fragmentation.powf(BETA));
        if score.is_nan() {
            0.0
        } else {
            score.max(0.0)
        }
    }
}

/// METEOR with the modules its data allows: exact and stem always, synonym and paraphrase with tables.
pub struct Meteor {
    modules: Vec<Module>,
    function_words: HashSet<String>,
    stemmer: rust_stemmers::Stemmer,
    synonyms: Option<Synonyms>,
    paraphrases: Option<Paraphrases>,
}

/// Per-image scores and the corpus score of a set of candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct MeteorScores {
    pub corpus: f64,
    pub per_image: Vec<f64>,
}

impl Meteor {
    /// METEOR's module order for English, keeping the modules whose data is there.
    pub fn new(synonyms: Option<Synonyms>, paraphrases: Option<Paraphrases>) -> Meteor {
        let mut modules = vec![Module::Exact, Module::Stem];
        if synonyms.is_some() {
            modules.push(Module::Synonym);
        }
        if paraphrases.is_some() {
            modules.push(Module::Paraphrase);
        }
        Meteor {
            modules,
            function_words: resources::english_function_words(),
            stemmer: rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English),
            synonyms,
            paraphrases,
        }
    }

    pub fn modules(&self) -> &[Module] {
        &self.modules
    }

    /// Statistics of one normalized test line against one normalized reference line.
    pub fn pair_stats(&self, test: &[String], reference: &[String]) -> MeteorStats {
        let stem = |w: &str| self.stemmer.stem(w).into_owned();
        let matchers = Matchers {
            modules: &self.modules,
            stem: &stem,
            synonyms: self.synonyms.as_ref(),
            paraphrases: self.paraphrases.as_ref(),
        };
        let alignment = align(test, reference, &matchers);
        let is_function = |w: &String| self.function_words.contains(&w.to_lowercase());
        let mut stats = MeteorStats {
            test_length: test.len() as f64,
            reference_length: reference.len() as f64,
            test_function_words: test.iter().filter(|w| is_function(w)).count() as f64,
            reference_function_words: reference.iter().filter(|w| is_function(w)).count() as f64,
            chunks: count_chunks(&alignment.matches) as f64,
            ..MeteorStats::default()
        };
        for m in alignment.matches.iter().flatten() {
            for k in 0..m.match_length {
                if is_function(&test[m.match_start + k]) {
                    stats.test_function_matches[m.module] += 1.0;
                } else {
                    stats.test_content_matches[m.module] += 1.0;
                }
            }
            for k in 0..m.length {
                if is_function(&reference[m.start + k]) {
                    stats.reference_function_matches[m.module] += 1.0;
                } else {
                    stats.reference_content_matches[m.module] += 1.0;
                }
            }
        }
        stats.test_word_matches = stats.test_total_matches();
        stats.reference_word_matches = stats.reference_total_matches();
        stats
    }

    /// `getMeteorStats(test, references)`: the statistics of the best-scoring reference (the first on a tie).
    pub fn image_stats(&self, test: &[String], references: &[Vec<String>]) -> MeteorStats {
        let mut best: Option<(f64, MeteorStats)> = None;
        for reference in references {
            let stats = self.pair_stats(test, reference);
            let score = stats.score(&self.modules);
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, stats));
            }
        }
        best.map(|(_, s)| s).unwrap_or_default()
    }

    /// Score captions already through the PTB tokenizer (pycocoevalcap's strings): each is normalized as
    /// `-norm` does, then aligned.
    pub fn score(&self, images: &[(String, Vec<String>)]) -> MeteorScores {
        let mut total = MeteorStats::default();
        let mut per_image = Vec::with_capacity(images.len());
        for (candidate, references) in images {
            let test = meteor_words(&hypothesis_line(candidate));
            let references: Vec<Vec<String>> = references.iter().map(|r| meteor_words(r)).collect();
            let stats = self.image_stats(&test, &references);
            per_image.push(stats.score(&self.modules));
            total.add(&stats);
        }
        MeteorScores { corpus: total.score(&self.modules), per_image }
    }
}

/// pycocoevalcap's `_stat` cleans the hypothesis (not the references) before writing the `SCORE` line.
fn hypothesis_line(candidate: &str) -> String {
    candidate.replace("|||", "").replace("  ", " ")
}

/// A caption as METEOR's aligner sees it: `-norm`, lower case, split on whitespace.
pub fn meteor_words(line: &str) -> Vec<String> {
    meteor_normalize(line.trim()).split_whitespace().map(str::to_string).collect()
}

/// Every word METEOR will see in these captions (to load only the paraphrases that can match).
pub fn meteor_vocabulary<'a>(captions: impl IntoIterator<Item = &'a str>) -> HashSet<String> {
    captions.into_iter().flat_map(meteor_words).collect()
}
