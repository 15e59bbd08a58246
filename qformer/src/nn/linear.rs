//! `nn.Linear` (PyTorch's weight layout `[out, in]`) holding candle's weights, with its own
//! forward:
//! - the leading dims of the input are folded into rows: the forward is the same one GEMM
//!   either way, but candle differentiates a 3-D input through a weight broadcast to the batch
//!   (one small `[in, T] x [T, out]` GEMM per batch row plus a sum), where the 2-D form gives
//!   the weight gradient as a single `[in, B·T] x [B·T, out]` GEMM;
//! - the product, the bias and an optional output scale are one node ([`linear_product`]): no
//!   gradient for a constant input or a constant weight (a frozen LLM), and no bias-less
//!   intermediate kept alive by candle's graph;
//! - off the CPU the input is made contiguous: candle's CUDA matmul refuses a row-strided
//!   operand, such as the `[CLS]` rows sliced out of `[B, L, H]` that the projection heads read
//!   ("matmul is only supported for contiguous tensors"). The CPU path stays copy-free.

use candle_core::{Module, Result, Tensor};

use super::linear_product::{linear_product, linear_product_heads};

#[derive(Clone, Debug)]
pub struct Linear(candle_nn::Linear);

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self(candle_nn::Linear::new(weight, bias))
    }

    pub fn weight(&self) -> &Tensor {
        self.0.weight()
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.0.bias()
    }
}

impl From<candle_nn::Linear> for Linear {
    fn from(inner: candle_nn::Linear) -> Self {
        Self(inner)
    }
}

impl Linear {
    /// `(x · wᵀ + b) · scale` as one node: the attention's query projection with its `1/√d`
    /// folded in, so the unscaled projection is not kept alive beside the scaled one.
    // x: [..., in] -> [..., out]
    pub fn forward_scaled(&self, x: &Tensor, scale: f64) -> Result<Tensor> {
        let dims = x.dims();
        let in_dim =
            *dims.last().ok_or_else(|| candle_core::Error::Msg("linear: a scalar input".into()))?;
        let rows = x.elem_count() / in_dim.max(1);
        let x2 = if dims.len() == 2 { x.clone() } else { x.reshape((rows, in_dim))? };
        let y = linear_product(&x2, self.weight(), self.bias(), scale)?;
        if dims.len() == 2 {
            return Ok(y);
        }
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank >= 1") = y.dim(1)?;
        y.reshape(out_dims)
    }
}

impl Linear {
    /// `(x · wᵀ + b) · scale` split into attention heads in the same node (see
    /// [`linear_product_heads`]).
    // x: [B, T, in] -> [B, heads, T, out / heads]
    pub fn forward_heads(&self, x: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
        let (b, t, in_dim) = x.dims3()?;
        let x2 = x.reshape((b * t, in_dim))?;
        linear_product_heads(&x2, self.weight(), self.bias(), scale, b, heads)
    }
}

impl Module for Linear {
    // x: [..., in] -> [..., out]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_scaled(x, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    #[test]
    fn strided_rows_give_the_rows_own_projection() {
        let dev = Device::Cpu;
        let w = Tensor::from_vec((0..12).map(|v| v as f32 / 6.0).collect(), (3, 4), &dev).unwrap();
        let lin = Linear::new(w, Some(Tensor::new(&[1f32, 2., 3.], &dev).unwrap()));
        let x = Tensor::from_vec((0..40).map(|v| v as f32).collect(), (2, 5, 4), &dev).unwrap();
        let cls = x.i((.., 0)).unwrap(); // [2, 4], row stride 20
        assert!(!cls.is_contiguous());
        let a = lin.forward(&cls).unwrap().to_vec2::<f32>().unwrap();
        let b = lin.forward(&cls.contiguous().unwrap()).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(a, b);
    }
}
