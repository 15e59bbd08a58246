//! Inverted dropout drawn from a caller-provided RNG (candle's CPU RNG cannot be seeded).

use candle_core::{Result, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Zeroes each element with probability `p` and scales the rest by 1/(1-p), like
/// `torch.nn.Dropout` in training mode. Identity (and no RNG draws) when `!train` or `p == 0`.
// x: [...] -> [...]
pub fn dropout(x: &Tensor, p: f64, train: bool, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    if !train || p == 0.0 {
        return Ok(x.clone());
    }
    if !(0.0..1.0).contains(&p) {
        candle_core::bail!("dropout probability {p} is not in [0, 1)")
    }
    let scale = (1.0 / (1.0 - p)) as f32;
    let keep: Vec<f32> =
        (0..x.elem_count()).map(|_| if rng.random::<f64>() < p { 0.0 } else { scale }).collect();
    let mask = Tensor::from_vec(keep, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x.mul(&mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::SeedableRng;

    #[test]
    fn eval_is_identity_and_train_zeroes_and_rescales() {
        let x = Tensor::ones((4, 1000), candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let same = dropout(&x, 0.5, false, &mut rng).unwrap();
        assert_eq!(same.sum_all().unwrap().to_scalar::<f32>().unwrap(), 4000.0);
        let y = dropout(&x, 0.25, true, &mut rng)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let zeros = y.iter().filter(|&&v| v == 0.0).count();
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
        assert!((800..1200).contains(&zeros), "{zeros} zeros of 4000 at p=0.25");
        // Same seed, same mask.
        let a = dropout(&x, 0.25, true, &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
        let b = dropout(&x, 0.25, true, &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
        assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
    }
}
