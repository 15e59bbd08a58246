//! Seeded fresh initialization (candle's own init draws from an unseedable RNG): BERT-like
//! N(0, 0.02) for matrices, embeddings, convolutions and the query tokens; LayerNorm 1 / 0;
//! biases 0; `temp` 0.07 (LAVIS).

use anyhow::Result;
use candle_core::{Tensor, Var};
use rand::Rng;

use qformer::train::TrainRng;

const STD: f64 = 0.02;
const TEMP: f32 = 0.07;

/// Overwrites every variable, visiting them by sorted name so the result only depends on the seed.
pub fn init_fresh(vars: &[(String, Var)], rng: &mut TrainRng) -> Result<()> {
    let mut vars: Vec<&(String, Var)> = vars.iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, var) in vars {
        let n = var.elem_count();
        let values: Vec<f32> = if name == "temp" || name.ends_with(".temp") {
            vec![TEMP; n]
        } else if name.ends_with("bias") {
            vec![0.0; n]
        } else if var.dims().len() == 1 {
            vec![1.0; n] // LayerNorm weight
        } else {
            (0..n).map(|_| (normal(rng) * STD) as f32).collect()
        };
        let t = Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// Box-Muller: one standard normal draw from two uniforms.
fn normal(rng: &mut TrainRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
