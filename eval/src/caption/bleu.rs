//! BLEU-1..4 exactly as pycocoevalcap's `bleu_scorer.py` computes it with `option='closest'`.
//!
//! Clipped n-gram matches (clip = the largest count in any one reference), the effective reference length
//! of each image is the closest reference length (ties: the shorter), the smoothing constants of the
//! original (`(correct + 1e-15) / (guess + 1e-9)`), and the brevity penalty `exp(1 - ref/test)` when the
//! test is shorter. The corpus score sums counts and lengths over the images first; the per-image scores
//! apply the same formula to one image's counts.

use std::collections::HashMap;

use super::ngrams::{ngram_counts, Ngram};
use super::TokenizedImage;

const MAX_N: usize = 4;
const SMALL: f64 = 1e-9;
const TINY: f64 = 1e-15;

/// BLEU-n for n = 1..4 (`scores[0]` is Bleu_1).
#[derive(Debug, Clone, PartialEq)]
pub struct BleuScores {
    pub corpus: [f64; MAX_N],
    pub per_image: Vec<[f64; MAX_N]>,
}

/// What BLEU needs of one image.
struct ImageCounts {
    test_len: usize,
    ref_len: usize,
    guess: [usize; MAX_N],
    correct: [usize; MAX_N],
}

fn image_counts(image: &TokenizedImage) -> ImageCounts {
    let mut max_ref_counts: HashMap<Ngram, usize> = HashMap::new();
    for reference in &image.references {
        for (ngram, count) in ngram_counts(reference, MAX_N) {
            let slot = max_ref_counts.entry(ngram).or_insert(0);
            *slot = (*slot).max(count);
        }
    }
    let test_len = image.candidate.len();
    // min over (|len - test|, len): the closest length, the shorter on a tie.
    let ref_len = image
        .references
        .iter()
        .map(|r| r.len())
        .min_by_key(|&l| (l.abs_diff(test_len), l))
        .unwrap_or(0);
    let mut guess = [0; MAX_N];
    for (k, g) in guess.iter_mut().enumerate() {
        *g = (test_len + 1).saturating_sub(k + 1);
    }
    let mut correct = [0; MAX_N];
    for (ngram, count) in ngram_counts(&image.candidate, MAX_N) {
        let clip = max_ref_counts.get(&ngram).copied().unwrap_or(0);
        correct[ngram.0 - 1] += count.min(clip);
    }
    ImageCounts { test_len, ref_len, guess, correct }
}

/// The cumulative geometric means with the brevity penalty, as `compute_score` writes them.
fn bleu_from_counts(
    test_len: f64,
    ref_len: f64,
    guess: &[usize; MAX_N],
    correct: &[usize; MAX_N],
) -> [f64; MAX_N] {
    let mut scores = [0.0; MAX_N];
    let mut product = 1.0;
    for k in 0..MAX_N {
        product *= (correct[k] as f64 + TINY) / (guess[k] as f64 + SMALL);
        scores[k] = product.powf(1.0 / (k + 1) as f64);
    }
    let ratio = (test_len + TINY) / (ref_len + SMALL);
    if ratio < 1.0 {
        for s in &mut scores {
            *s *= (1.0 - 1.0 / ratio).exp();
        }
    }
    scores
}

/// Corpus and per-image BLEU-1..4 over the images in order.
pub fn bleu(images: &[TokenizedImage]) -> BleuScores {
    let mut total_test = 0usize;
    let mut total_ref = 0usize;
    let mut total_guess = [0usize; MAX_N];
    let mut total_correct = [0usize; MAX_N];
    let mut per_image = Vec::with_capacity(images.len());
    for image in images {
        let c = image_counts(image);
        total_test += c.test_len;
        total_ref += c.ref_len;
        for k in 0..MAX_N {
            total_guess[k] += c.guess[k];
            total_correct[k] += c.correct[k];
        }
        per_image.push(bleu_from_counts(c.test_len as f64, c.ref_len as f64, &c.guess, &c.correct));
    }
    let corpus =
        bleu_from_counts(total_test as f64, total_ref as f64, &total_guess, &total_correct);
    BleuScores { corpus, per_image }
}
