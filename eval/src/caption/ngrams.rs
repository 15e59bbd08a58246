//! N-gram counts of a token sequence (1..=4-grams), shared by BLEU and CIDEr.

use indexmap::IndexMap;

/// An n-gram: its order (word count) and its words joined by a space (tokens hold no spaces).
pub type Ngram = (usize, String);

/// Counts of every n-gram of `1..=max_n` words, in first-occurrence order (by n, then position), the order
/// Python's dict keeps in pycocoevalcap, so float sums over them add in the same order.
pub fn ngram_counts(tokens: &[String], max_n: usize) -> IndexMap<Ngram, usize> {
    let mut counts = IndexMap::new();
    for n in 1..=max_n {
        for window in tokens.windows(n) {
            *counts.entry((n, window.join(" "))).or_insert(0) += 1;
        }
    }
    counts
}
