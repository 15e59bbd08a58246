//! ROUGE-L as pycocoevalcap's `rouge.py`: per image, the longest common subsequence of the candidate with
//! each reference; the best precision and the best recall over the references (taken separately) combine
//! into an F-measure with beta 1.2; the corpus score is the mean over images.
//!
//! pycocoevalcap splits on a single space, so an empty caption is one empty token (length 1), not zero
//! tokens: an empty candidate scores 0 without a division by zero, and an empty reference counts as length 1.

use super::numpy_mean::numpy_mean;
use super::TokenizedImage;

const BETA: f64 = 1.2;

#[derive(Debug, Clone, PartialEq)]
pub struct RougeScores {
    pub corpus: f64,
    pub per_image: Vec<f64>,
}

/// `"".split(" ")` is `[""]`: the token list pycocoevalcap compares.
fn as_split_on_space(tokens: &[String]) -> Vec<&str> {
    if tokens.is_empty() {
        vec![""]
    } else {
        tokens.iter().map(String::as_str).collect()
    }
}

fn lcs_len(a: &[&str], b: &[&str]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y { prev[j] + 1 } else { prev[j + 1].max(cur[j]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ROUGE-L of one candidate against its references.
pub fn rouge_l_image(image: &TokenizedImage) -> f64 {
    let candidate = as_split_on_space(&image.candidate);
    let mut best_precision = 0.0f64;
    let mut best_recall = 0.0f64;
    for reference in &image.references {
        let reference = as_split_on_space(reference);
        let lcs = lcs_len(&reference, &candidate) as f64;
        best_precision = best_precision.max(lcs / candidate.len() as f64);
        best_recall = best_recall.max(lcs / reference.len() as f64);
    }
    if best_precision != 0.0 && best_recall != 0.0 {
        let b2 = BETA * BETA;
        ((1.0 + b2) * best_precision * best_recall) / (best_recall + b2 * best_precision)
    } else {
        0.0
    }
}

pub fn rouge_l(images: &[TokenizedImage]) -> RougeScores {
    let per_image: Vec<f64> = images.iter().map(rouge_l_image).collect();
    RougeScores { corpus: numpy_mean(&per_image), per_image }
}
