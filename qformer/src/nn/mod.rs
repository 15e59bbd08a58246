//! Differentiable building blocks.
//!
//! candle's fused `LayerNorm`/`RmsNorm` modules, `ops::layer_norm`, `ops::rms_norm` and
//! `softmax_last_dim` have no backward pass: gradients are silently dropped (candle 0.11 builds
//! them with `apply_op*_no_bwd`, so `backward()` succeeds and their inputs just get no gradient,
//! with no error). Everything on a training path in this crate
//! uses the blocks here instead; inference-only paths may use the fused ops.

mod dropout;
pub(crate) mod fast_math;
mod fused;
pub mod half_weight;
mod layer_norm;
mod linear;
mod linear_product;
mod rms_norm;

pub use dropout::dropout;
pub use fused::gelu;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use linear_product::{linear_product, linear_product_heads, matmul_t};
pub use rms_norm::RmsNorm;

use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;

/// Differentiable softmax over the last dimension: the fused kernel with its fused backward on
/// contiguous f32 CPU tensors, candle's fused one elsewhere when nothing tracks a gradient, and
/// candle's composite ops (all with a backward) otherwise.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    if let Some(y) = fused::softmax_last_dim(x) {
        return y;
    }
    if !x.track_op() && x.is_contiguous() {
        return candle_nn::ops::softmax_last_dim(x);
    }
    candle_nn::ops::softmax(x, D::Minus1)
}

/// `softmax(scores + mask)` over the last dimension: one fused node on the CPU (the masked
/// scores are not kept, and the constant mask gets no gradient), the composite elsewhere.
// scores: [B, heads, T, K], mask: broadcastable to [B, 1, T, K] -> [B, heads, T, K]
pub fn masked_softmax(scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
    if let Some(y) = fused::masked_softmax(scores, mask) {
        return y;
    }
    softmax(&scores.broadcast_add(mask)?)
}

/// `nn.Linear(in, out, bias)` with PyTorch's weight layout `[out, in]`.
pub fn linear(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    if bias {
        candle_nn::linear(in_dim, out_dim, vb).map(Linear::from)
    } else {
        candle_nn::linear_no_bias(in_dim, out_dim, vb).map(Linear::from)
    }
}

/// [`linear`] whose weight, when it is a constant (a frozen ViT, a Q-Former loaded for
/// inference), is laid out for the forward GEMM ([`Linear::with_gemm_layout`]); a trainable
/// weight (`Var`) keeps its layout. Not for the LLMs: stage two back-propagates through the frozen
/// LLM to the soft prompt, and `∂x = g · w` wants the row-major `[out, in]` weight.
pub fn linear_gemm_layout(
    in_dim: usize,
    out_dim: usize,
    bias: bool,
    vb: VarBuilder,
) -> Result<Linear> {
    linear(in_dim, out_dim, bias, vb)?.with_gemm_layout()
}
