//! LayerNorm built from differentiable ops (candle's fused one has no backward).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(size, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }

    pub fn from_tensors(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        Self { weight, bias, eps }
    }

    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// Same module with another epsilon (LAVIS `ln_vision` uses 1e-5 where HF uses 1e-6).
    pub fn with_eps(&self, eps: f64) -> Self {
        Self { eps, ..self.clone() }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for LayerNorm {
    // x: [..., H] -> [..., H]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if super::fused::fusable(&[x, &self.weight, &self.bias]) {
            return super::fused::layer_norm(x, &self.weight, &self.bias, self.eps);
        }
        self.forward_composite(x)
    }
}

impl LayerNorm {
    /// The same LayerNorm from candle's differentiable ops (non-f32, non-contiguous or non-CPU
    /// inputs; and the reference the fused kernel is tested against).
    // x: [..., H] -> [..., H]
    pub(crate) fn forward_composite(&self, x: &Tensor) -> Result<Tensor> {
        let in_dtype = x.dtype();
        // Statistics in f32 at least, like PyTorch's CPU kernel for half inputs.
        let x = if in_dtype == DType::F64 { x.clone() } else { x.to_dtype(DType::F32)? };
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed.to_dtype(in_dtype)?.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}
