//! T5-style RMS norm (no mean subtraction, no bias) from differentiable ops.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?;
        Ok(Self { weight, eps })
    }
}

impl Module for RmsNorm {
    // x: [..., H] -> [..., H]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let in_dtype = x.dtype();
        // HF T5LayerNorm: variance in f32, then cast back to the weight's dtype.
        let x32 = if in_dtype == DType::F64 { x.clone() } else { x.to_dtype(DType::F32)? };
        let var = x32.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x32.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed.to_dtype(self.weight.dtype())?.broadcast_mul(&self.weight)
    }
}
