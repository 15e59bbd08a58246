//! Image-text matching with hard negatives (LAVIS `blip2_qformer.py` ITM block, single process).
//!
//! SelectedNegatives are drawn from the temperature-scaled ITC similarities with positives excluded:
//! for each text a negative image (rows of `sim_t2i`), then for each image a negative text
//! (rows of `sim_i2t`), in that order, from the caller's RNG, or deterministically the hardest
//! (argmax, first index on ties). The batch is `[pos pairs; (neg image, text); (image, neg text)]`
//! with labels `[1]*B + [0]*2B` and plain cross-entropy.

use candle_core::{DType, Result, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::cross_entropy::{cross_entropy, CeOpts};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NegativeMode {
    /// Multinomial draw from the weights (LAVIS training).
    Sample,
    /// The most similar non-positive (deterministic; what the fixture's argmax patch does).
    Hardest,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SelectedNegatives {
    /// For each text b, the index of its negative image.
    pub image_for_text: Vec<usize>,
    /// For each image b, the index of its negative text.
    pub text_for_image: Vec<usize>,
    /// `[B][B]` sampling weights used for the images (rows: texts).
    pub weights_t2i: Vec<Vec<f32>>,
    /// `[B][B]` sampling weights used for the texts (rows: images).
    pub weights_i2t: Vec<Vec<f32>>,
}

/// Row-wise sampling weights. Without image ids: LAVIS 1.0.2, `softmax(sim) + 1e-4` with the
/// diagonal zeroed. With image ids: LAVIS HEAD, softmax after filling same-id pairs with -10000.
fn weights(sim: &[Vec<f32>], image_ids: Option<&[i64]>) -> Vec<Vec<f32>> {
    sim.iter()
        .enumerate()
        .map(|(i, row)| {
            let positive = |j: usize| match image_ids {
                Some(ids) => ids[i] == ids[j],
                None => i == j,
            };
            let vals: Vec<f64> = row
                .iter()
                .enumerate()
                .map(|(j, &v)| if image_ids.is_some() && positive(j) { -10000.0 } else { v as f64 })
                .collect();
            let max = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = vals.iter().map(|v| (v - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            if !sum.is_finite() {
                // Non-finite similarities (a diverged step, which the step guard will skip):
                // any negative will do, uniformly, rather than failing the run here.
                return (0..row.len()).map(|j| if positive(j) { 0.0 } else { 1.0 }).collect();
            }
            exps.iter()
                .enumerate()
                .map(|(j, e)| match image_ids {
                    None if positive(j) => 0.0,
                    None => (e / sum + 1e-4) as f32,
                    Some(_) => (e / sum) as f32,
                })
                .collect()
        })
        .collect()
}

fn pick(w: &[f32], mode: NegativeMode, rng: &mut ChaCha8Rng) -> Result<usize> {
    let total: f64 = w.iter().map(|&x| x as f64).sum();
    if total.is_nan() || total <= 0.0 {
        candle_core::bail!("ITM: no negative candidate in a row (every pair is positive)")
    }
    Ok(match mode {
        NegativeMode::Hardest => {
            let mut best = 0;
            for (j, &x) in w.iter().enumerate() {
                if x > w[best] {
                    best = j;
                }
            }
            best
        }
        NegativeMode::Sample => {
            let mut u = rng.random::<f64>() * total;
            let mut chosen = w.len() - 1;
            for (j, &x) in w.iter().enumerate() {
                if u < x as f64 {
                    chosen = j;
                    break;
                }
                u -= x as f64;
            }
            // Never return a zero-weight (positive) entry through rounding at the end.
            while w[chosen] == 0.0 {
                chosen -= 1;
            }
            chosen
        }
    })
}

/// Chooses the ITM negatives from the temperature-scaled similarities (no gradient).
// sim_i2t: [B, B], sim_t2i: [B, B] -> indices
pub fn select_negatives(
    sim_i2t: &Tensor,
    sim_t2i: &Tensor,
    image_ids: Option<&[i64]>,
    mode: NegativeMode,
    rng: &mut ChaCha8Rng,
) -> Result<SelectedNegatives> {
    let i2t: Vec<Vec<f32>> = sim_i2t.detach().to_dtype(DType::F32)?.to_vec2()?;
    let t2i: Vec<Vec<f32>> = sim_t2i.detach().to_dtype(DType::F32)?.to_vec2()?;
    let weights_t2i = weights(&t2i, image_ids);
    let weights_i2t = weights(&i2t, image_ids);
    let image_for_text =
        weights_t2i.iter().map(|w| pick(w, mode, rng)).collect::<Result<Vec<_>>>()?;
    let text_for_image =
        weights_i2t.iter().map(|w| pick(w, mode, rng)).collect::<Result<Vec<_>>>()?;
    Ok(SelectedNegatives { image_for_text, text_for_image, weights_t2i, weights_i2t })
}

impl SelectedNegatives {
    /// Row order of images in the 3B ITM batch: `[b; image_for_text[b]; b]`.
    pub fn image_rows(&self) -> Vec<u32> {
        let b = self.image_for_text.len() as u32;
        (0..b).chain(self.image_for_text.iter().map(|&i| i as u32)).chain(0..b).collect()
    }
    /// Row order of texts in the 3B ITM batch: `[b; b; text_for_image[b]]`.
    pub fn text_rows(&self) -> Vec<u32> {
        let b = self.text_for_image.len() as u32;
        (0..b).chain(0..b).chain(self.text_for_image.iter().map(|&i| i as u32)).collect()
    }
    /// `[1]*B + [0]*2B`
    pub fn labels(&self) -> Vec<i64> {
        let b = self.image_for_text.len();
        std::iter::repeat_n(1, b).chain(std::iter::repeat_n(0, 2 * b)).collect()
    }
}

/// Plain cross-entropy of the ITM logits against `[1]*B + [0]*2B`.
// logits: [3B, 2] -> scalar
pub fn itm_loss(logits: &Tensor, negatives: &SelectedNegatives) -> Result<Tensor> {
    cross_entropy(logits, &negatives.labels(), CeOpts::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::SeedableRng;

    #[test]
    fn hardest_excludes_positives_and_takes_first_on_ties() {
        let sim = Tensor::new(&[[9f32, 1., 1.], [5., 0., 2.], [3., 3., 1.]], &Device::Cpu).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let n = select_negatives(&sim, &sim, None, NegativeMode::Hardest, &mut rng).unwrap();
        assert_eq!(n.image_for_text, vec![1, 0, 0]);
        assert_eq!(n.weights_t2i[0][0], 0.0);
        // Same image id for items 0 and 1: neither may be the other's negative.
        let n = select_negatives(&sim, &sim, Some(&[7, 7, 8]), NegativeMode::Hardest, &mut rng)
            .unwrap();
        assert_eq!(n.image_for_text, vec![2, 2, 0]);
        assert_eq!(n.image_rows(), vec![0, 1, 2, 2, 2, 0, 0, 1, 2]);
    }

    #[test]
    fn sampling_follows_weights_and_never_picks_positives() {
        let sim = Tensor::new(&[[0f32, 2., 0.], [0., 0., 0.], [1., 1., 0.]], &Device::Cpu).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut counts = [0usize; 3];
        for _ in 0..2000 {
            let n = select_negatives(&sim, &sim, None, NegativeMode::Sample, &mut rng).unwrap();
            assert_ne!(n.image_for_text[1], 1);
            counts[n.image_for_text[0]] += 1;
        }
        assert_eq!(counts[0], 0);
        // Row 0: weights e^2 : e^0 over columns 1, 2 (softmax + 1e-4), ~0.88 for column 1.
        let frac = counts[1] as f64 / 2000.0;
        assert!((0.84..0.92).contains(&frac), "{frac}");
    }
}
