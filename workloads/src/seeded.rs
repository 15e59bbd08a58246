//! A `VarBuilder` backend that creates missing variables from seeded values, so benchmark
//! models are reproducible (candle's CPU RNG cannot be seeded).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::Rng;

use train::rng::substream;

/// Wraps a `VarMap`: a variable that is not there yet is drawn from the run seed and its name
/// (`train::rng::substream`), so its values do not depend on the order the model asks for them.
/// `frozen` maps hand out plain tensors instead of `Var`s, as weights loaded from a checkpoint are:
/// inference then records no autograd graph (and takes the fused no-grad kernels). Like a
/// checkpoint loader they keep no reference to what they handed out (only names and shapes), so
/// a model that re-lays a weight out (`nn::Linear::with_gemm_layout`) frees the original and the
/// benchmark's peak RSS is what loading a checkpoint would give.
/// Random inits are uniform with the init's mean and standard deviation: timing does not depend
/// on the distribution's shape, and uniform draws are ~10x cheaper than normal ones (ViT-g has
/// a billion parameters).
pub struct SeededVarMap {
    varmap: VarMap,
    frozen: Option<Arc<Mutex<HashMap<String, Shape>>>>,
    seed: u64,
}

impl SeededVarMap {
    /// Trainable: every weight is a `Var` in `varmap()`.
    pub fn new(seed: u64) -> Self {
        Self { varmap: VarMap::new(), frozen: None, seed }
    }

    /// Inference: plain tensors; `varmap()` stays empty.
    pub fn frozen(seed: u64) -> Self {
        Self { varmap: VarMap::new(), frozen: Some(Arc::default()), seed }
    }

    /// The variables created so far (shared with every builder from `var_builder`).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// A `VarBuilder` over a handle to the same variables.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        let backend =
            Self { varmap: self.varmap.clone(), frozen: self.frozen.clone(), seed: self.seed };
        VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
    }
}

/// `n` values with this mean and standard deviation, uniform, from the named substream.
pub fn seeded_values(seed: u64, name: &str, n: usize, mean: f64, std: f64) -> Vec<f32> {
    let mut rng = substream(seed, name);
    let half_width = (3f64.sqrt() * std) as f32;
    let mean = mean as f32;
    (0..n).map(|_| mean + half_width * (2.0 * rng.random::<f32>() - 1.0)).collect()
}

/// A `[shape]` f32 tensor of `seeded_values`.
pub fn seeded_tensor(
    seed: u64,
    name: &str,
    shape: impl Into<Shape>,
    mean: f64,
    std: f64,
    device: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    Tensor::from_vec(seeded_values(seed, name, shape.elem_count(), mean, std), shape, device)
}

fn init_tensor(seed: u64, name: &str, shape: &Shape, init: Init, dev: &Device) -> Result<Tensor> {
    let (mean, std) = match init {
        Init::Const(c) => return Tensor::full(c as f32, shape, dev),
        Init::Randn { mean, stdev } => (mean, stdev),
        Init::Uniform { lo, up } => ((lo + up) / 2.0, (up - lo) / 12f64.sqrt()),
        // Normal and uniform Kaiming share this standard deviation.
        Init::Kaiming { fan, non_linearity, .. } => {
            (0.0, non_linearity.gain() / (fan.for_shape(shape).max(1) as f64).sqrt())
        }
    };
    seeded_tensor(seed, name, shape.clone(), mean, std, dev)
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        if let Some(frozen) = &self.frozen {
            let mut shapes = frozen.lock().expect("weights mutex poisoned");
            if let Some(shape) = shapes.get(name) {
                if shape != &s {
                    candle_core::bail!("shape mismatch on {name}: {s:?} <> {shape:?}")
                }
            }
            // Drawn again on a second request: the values depend on the seed and name only.
            let t = init_tensor(self.seed, name, &s, h, dev)?.to_dtype(dtype)?;
            shapes.insert(name.to_string(), s);
            return Ok(t);
        }
        let mut data = self.varmap.data().lock().expect("VarMap mutex poisoned");
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", var.shape())
            }
            return Ok(var.as_tensor().clone());
        }
        let t = init_tensor(self.seed, name, &s, h, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("{name}: a seeded VarMap creates variables only with a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        if let Some(frozen) = &self.frozen {
            return frozen.lock().expect("weights mutex poisoned").contains_key(name);
        }
        self.varmap.data().lock().expect("VarMap mutex poisoned").contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_and_init_statistics_hold() {
        let dev = Device::Cpu;
        let a = SeededVarMap::new(5);
        let b = SeededVarMap::new(5);
        let c = SeededVarMap::new(6);
        let w = |m: &SeededVarMap| {
            m.var_builder(DType::F32, &dev)
                .get_with_hints((300, 200), "w", Init::Randn { mean: 0.0, stdev: 0.02 })
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let (wa, wb, wc) = (w(&a), w(&b), w(&c));
        assert_eq!(wa, wb);
        assert_ne!(wa, wc);
        let n = wa.len() as f64;
        let mean = wa.iter().map(|&x| x as f64).sum::<f64>() / n;
        let std = (wa.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 1e-3 && (std - 0.02).abs() < 5e-4, "mean {mean} std {std}");
        // The variable is registered once and returned again on the second request.
        assert_eq!(a.varmap().all_vars().len(), 1);
        let again = a.var_builder(DType::F32, &dev).get((300, 200), "w").unwrap();
        assert_eq!(again.flatten_all().unwrap().to_vec1::<f32>().unwrap(), wa);
        let f = SeededVarMap::frozen(5);
        let t = f
            .var_builder(DType::F32, &dev)
            .get_with_hints((300, 200), "w", Init::Randn { mean: 0.0, stdev: 0.02 })
            .unwrap();
        assert!(!t.is_variable() && f.varmap().all_vars().is_empty());
        assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), wa);
        let ones =
            a.var_builder(DType::F32, &dev).get_with_hints(3, "g", Init::Const(1.0)).unwrap();
        assert_eq!(ones.to_vec1::<f32>().unwrap(), vec![1.0; 3]);
    }
}
