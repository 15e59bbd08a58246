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

use candle_core::{DType, Module, Result, Tensor};

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

impl Linear {
    /// The same layer with a frozen f32 CPU weight stored column-major: still `[out, in]`, but
    /// with strides `(1, out)`, so the forward GEMM reads it as a row-major `[in, out]` operand.
    ///
    /// The `gemm` crate is much faster that way round than on the transposed view of a
    /// row-major `[out, in]` weight (which it re-packs on every call): 2.5x at the Q-Former FFN
    /// output `[256 x 3072] · [3072 x 768]`, 1.8x at ViT-g's fc2, 10x at a 40-token prefill
    /// through OPT's fc2, 1.1-1.3x at the other projections. A trainable weight (a `Var`,
    /// updated in place by the optimizer) keeps its layout, as does every weight off the CPU
    /// (cuBLAS takes either). The backward stays correct for this layout but is slower: its
    /// `∂x = g · w` wants the row-major weight, so layers a gradient flows back through keep it.
    pub fn with_gemm_layout(self) -> Result<Self> {
        let w = self.weight();
        let frozen_cpu_f32 = !w.is_variable()
            && w.device().is_cpu()
            && w.dtype() == DType::F32
            && w.rank() == 2
            && w.is_contiguous();
        if !frozen_cpu_f32 {
            return Ok(self);
        }
        let column_major = w.t()?.contiguous()?.t()?;
        Ok(Self::new(column_major, self.bias().cloned()))
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
    fn a_frozen_weight_is_laid_out_for_the_gemm_and_gives_the_same_layer() {
        let dev = Device::Cpu;
        let (n, k) = (48, 80);
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.13).sin()).collect();
        let w = Tensor::from_vec(w, (n, k), &dev).unwrap();
        let b = Tensor::from_vec((0..n).map(|i| i as f32 / 10.0).collect(), n, &dev).unwrap();
        let plain = Linear::new(w.clone(), Some(b.clone()));
        let fast = Linear::new(w.clone(), Some(b.clone())).with_gemm_layout().unwrap();
        // Same [out, in] tensor, stored column-major.
        assert_eq!(fast.weight().dims(), &[n, k]);
        assert_eq!(fast.weight().stride(), &[1, n]);
        assert_eq!(fast.weight().to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        let x = candle_core::Var::from_tensor(
            &Tensor::from_vec(
                (0..3 * 5 * k).map(|i| (i as f32 * 0.07).cos()).collect(),
                (3, 5, k),
                &dev,
            )
            .unwrap(),
        )
        .unwrap();
        let (ya, yb) = (plain.forward(&x).unwrap(), fast.forward(&x).unwrap());
        let diff =
            (&ya - &yb).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "forward differs by {diff}");
        let ga = ya.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let gb = yb.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (ga.get(x.as_tensor()).unwrap(), gb.get(x.as_tensor()).unwrap());
        let diff = (ga - gb).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "input gradient differs by {diff}");
        // A trainable weight keeps its layout: the optimizer writes it in place.
        let var = candle_core::Var::from_tensor(&w).unwrap();
        let trainable = Linear::new(var.as_tensor().clone(), None).with_gemm_layout().unwrap();
        assert_eq!(trainable.weight().stride(), &[k, 1]);
    }

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
