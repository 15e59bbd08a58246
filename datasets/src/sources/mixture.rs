//! The order of an epoch over several sources: each sample slot draws its source by weight and
//! takes that source's next item in a seeded permutation (a new one each time a source runs
//! through, so a small source weighted up repeats in a fresh order). The order is a function of
//! (seed, epoch) alone: a resumed run at the same position reads the same samples.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};

/// Sources laid end to end in one item list: source `s` holds items
/// `offsets[s]..offsets[s] + sizes[s]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mixture {
    sizes: Vec<usize>,
    offsets: Vec<usize>,
    /// Cumulative, normalized to end at 1.
    cumulative: Vec<f64>,
}

impl Mixture {
    /// `sizes` and `weights` per source; empty sources must have weight 0 or be left out.
    pub fn new(sizes: &[usize], weights: &[f64]) -> Result<Self> {
        if sizes.is_empty() || sizes.len() != weights.len() {
            return Err(DataError::Invalid("a mixture needs one weight per source".into()));
        }
        for (s, (&n, &w)) in sizes.iter().zip(weights).enumerate() {
            if !(w.is_finite() && w >= 0.0) {
                return Err(DataError::Invalid(format!(
                    "data.sources[{s}].weight must be >= 0 (got {w})"
                )));
            }
            if n == 0 && w > 0.0 {
                return Err(DataError::Invalid(format!(
                    "data.sources[{s}] has no samples to draw"
                )));
            }
        }
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            return Err(DataError::Invalid("data.sources: the weights sum to 0".into()));
        }
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        let offsets = sizes
            .iter()
            .scan(0, |o, &n| {
                let at = *o;
                *o += n;
                Some(at)
            })
            .collect();
        Ok(Self { sizes: sizes.to_vec(), offsets, cumulative })
    }

    /// Samples per epoch: as many as the sources hold together.
    pub fn len(&self) -> usize {
        self.sizes.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Item indices of `epoch`, in reading order.
    pub fn order(&self, seed: u64, epoch: u64) -> Vec<usize> {
        let mut pick = ChaCha8Rng::seed_from_u64(seed ^ 0x6d69_7874_7572_6573);
        pick.set_stream(epoch);
        let mut perms: Vec<Vec<usize>> = vec![Vec::new(); self.sizes.len()];
        let mut cycles = vec![0u64; self.sizes.len()];
        let mut next = vec![0usize; self.sizes.len()];
        (0..self.len())
            .map(|_| {
                let u: f64 = pick.random();
                let s = self.cumulative.iter().position(|&c| u < c).unwrap_or(self.sizes.len() - 1);
                if next[s] == perms[s].len() {
                    // This source's next pass, in an order of its own.
                    let mut rng = ChaCha8Rng::seed_from_u64(
                        seed ^ (s as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    );
                    rng.set_stream(epoch.wrapping_mul(1 << 20).wrapping_add(cycles[s]));
                    perms[s] = (0..self.sizes[s]).collect();
                    perms[s].shuffle(&mut rng);
                    cycles[s] += 1;
                    next[s] = 0;
                }
                next[s] += 1;
                self.offsets[s] + perms[s][next[s] - 1]
            })
            .collect()
    }

    /// The source of item `index`.
    pub fn source_of(&self, index: usize) -> usize {
        self.offsets.iter().rposition(|&o| o <= index).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_three_to_one_draw_three_to_one_and_the_order_is_a_function_of_the_seed() {
        let m = Mixture::new(&[50, 9_950], &[3.0, 1.0]).unwrap();
        let order = m.order(7, 2);
        assert_eq!(order.len(), 10_000);
        let first = order.iter().filter(|&&i| m.source_of(i) == 0).count() as f64;
        let ratio = first / (order.len() as f64 - first);
        assert!((ratio - 3.0).abs() < 0.15, "{ratio}");
        assert_eq!(order, m.order(7, 2));
        assert_ne!(order, m.order(7, 3));
        // The small source runs through in full before it repeats.
        let small: Vec<usize> = order.iter().copied().filter(|&i| i < 50).take(50).collect();
        let mut sorted = small.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert!(Mixture::new(&[0, 5], &[1.0, 1.0]).unwrap_err().to_string().contains("sources[0]"));
    }
}
