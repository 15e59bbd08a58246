//! A `VarBuilder` over frozen weights that keeps every half-precision (bf16/f16) matrix in the
//! dtype it was stored in, and gives every other tensor in the builder's dtype.
//!
//! A 7B LLaMA is 13.5 GB in bf16 and 27 GB in f32: `VarBuilder::from_tensors(.., F32, ..)`
//! converts each tensor as the model asks for it, so the f32 copies (and, while the builder
//! lives, the stored originals) of every matrix are held at once. Here the rank-2 tensors — the
//! linear weights, the embedding tables, the LM head — are handed out as they are (no copy:
//! candle tensors share their storage); [`crate::nn::Linear`] multiplies f32 activations by such a
//! weight directly, and the models widen embedding rows after the lookup. Vectors (norms, biases,
//! the class embedding) and convolution kernels are small and are converted to the builder's
//! dtype, so normalisation and the activations stay f32.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

/// Frozen tensors by name; see the module docs for which keep their dtype.
struct StoredDtype(HashMap<String, Tensor>);

/// Whether `t`, asked for as `dtype`, is handed out as stored.
fn keeps_stored_dtype(t: &Tensor, dtype: DType) -> bool {
    t.rank() == 2 && matches!(t.dtype(), DType::BF16 | DType::F16) && dtype.is_float()
}

impl StoredDtype {
    fn fetch(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let t = self
            .0
            .get(name)
            .ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.into() }.bt())?;
        let t = t.to_device(dev)?;
        if keeps_stored_dtype(&t, dtype) {
            Ok(t)
        } else {
            t.to_dtype(dtype)
        }
    }
}

impl SimpleBackend for StoredDtype {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        if let Some(t) = self.0.get(name) {
            if t.shape() != &s {
                candle_core::bail!(
                    "tensor {name} has shape {:?}, the model expects {:?}",
                    t.dims(),
                    s.dims()
                )
            }
        }
        self.fetch(name, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.fetch(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// A builder over frozen `tensors` whose bf16/f16 matrices keep their dtype and whose other
/// tensors come in `dtype` (the compute dtype, normally f32). For inference (generate, eval);
/// trainable weights belong in a `VarMap` in f32.
pub fn frozen_var_builder(
    tensors: HashMap<String, Tensor>,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(StoredDtype(tensors)), dtype, device.clone())
}
