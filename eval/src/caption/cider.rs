//! CIDEr-D as pycocoevalcap's `cider_scorer.py` computes it (COCOEvalCap reports it as `CIDEr`).
//!
//! TF-IDF vectors of 1..4-grams, with document frequencies counted over the references of the images being
//! scored (so a score depends on the whole set, as in COCO), `log(max(1, df))` and `log(#images)`; the
//! similarity clips the candidate's weights by the reference's (`min(v_h, v_r) * v_r`), divides by both
//! norms, and multiplies by a Gaussian penalty (sigma 6) on the difference of the two captions' bigram
//! counts; mean over n, mean over references, times 10; the corpus score is the mean over images.

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;

use super::ngrams::{ngram_counts, Ngram};
use super::numpy_mean::numpy_mean;
use super::TokenizedImage;

const MAX_N: usize = 4;
const SIGMA: f64 = 6.0;

#[derive(Debug, Clone, PartialEq)]
pub struct CiderScores {
    pub corpus: f64,
    pub per_image: Vec<f64>,
}

type Counts = IndexMap<Ngram, usize>;

/// One caption's TF-IDF vector per n-gram order, the norm of each, and its bigram count (the "length" the
/// penalty compares, as in the original).
struct TfIdf {
    weights: [IndexMap<String, f64>; MAX_N],
    norms: [f64; MAX_N],
    length: usize,
}

fn tf_idf(counts: &Counts, document_frequency: &HashMap<Ngram, f64>, log_images: f64) -> TfIdf {
    let mut weights: [IndexMap<String, f64>; MAX_N] = Default::default();
    let mut squares = [0.0f64; MAX_N];
    let mut length = 0;
    for ((n, ngram), &tf) in counts {
        let df = document_frequency.get(&(*n, ngram.clone())).copied().unwrap_or(0.0).max(1.0).ln();
        let w = tf as f64 * (log_images - df);
        weights[n - 1].insert(ngram.clone(), w);
        squares[n - 1] += w.powi(2);
        if *n == 2 {
            length += tf;
        }
    }
    TfIdf { weights, norms: squares.map(f64::sqrt), length }
}

// n indexes four parallel arrays (weights, norms of both sides, the result).
#[allow(clippy::needless_range_loop)]
fn similarity(hyp: &TfIdf, reference: &TfIdf) -> [f64; MAX_N] {
    let delta = hyp.length as f64 - reference.length as f64;
    let penalty = std::f64::consts::E.powf(-(delta.powi(2)) / (2.0 * SIGMA.powi(2)));
    let mut val = [0.0f64; MAX_N];
    for n in 0..MAX_N {
        for (ngram, &vh) in &hyp.weights[n] {
            let vr = reference.weights[n].get(ngram).copied().unwrap_or(0.0);
            val[n] += vh.min(vr) * vr;
        }
        if hyp.norms[n] != 0.0 && reference.norms[n] != 0.0 {
            val[n] /= hyp.norms[n] * reference.norms[n];
        }
        val[n] *= penalty;
    }
    val
}

pub fn cider_d(images: &[TokenizedImage]) -> CiderScores {
    let refs: Vec<Vec<Counts>> = images
        .iter()
        .map(|image| image.references.iter().map(|r| ngram_counts(r, MAX_N)).collect())
        .collect();
    let mut document_frequency: HashMap<Ngram, f64> = HashMap::new();
    for image_refs in &refs {
        let mut seen: HashSet<&Ngram> = HashSet::new();
        for counts in image_refs {
            seen.extend(counts.keys());
        }
        for ngram in seen {
            *document_frequency.entry(ngram.clone()).or_insert(0.0) += 1.0;
        }
    }
    let log_images = (images.len() as f64).ln();
    let per_image: Vec<f64> = images
        .iter()
        .zip(&refs)
        .map(|(image, image_refs)| {
            let hyp =
                tf_idf(&ngram_counts(&image.candidate, MAX_N), &document_frequency, log_images);
            let mut sum = [0.0f64; MAX_N];
            for counts in image_refs {
                let reference = tf_idf(counts, &document_frequency, log_images);
                for (s, v) in sum.iter_mut().zip(similarity(&hyp, &reference)) {
                    *s += v;
                }
            }
            numpy_mean(&sum) / image_refs.len() as f64 * 10.0
        })
        .collect();
    CiderScores { corpus: numpy_mean(&per_image), per_image }
}
