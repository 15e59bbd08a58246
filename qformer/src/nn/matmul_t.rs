//! `x · wᵀ` (a linear layer's product) whose backward computes only the gradients that are
//! wanted.
//!
//! candle's matmul backward computes both operands' gradients even when one of them is a
//! constant, then keeps that gradient in the store. The constant operand that matters here is
//! **a frozen LLM**: in stage two every OPT/T5 weight, the tied `[vocab, H]` LM head included,
//! is a constant while gradients flow through it to the soft prompt, so candle computes and
//! drops a weight gradient per layer (one of the three GEMMs a frozen layer costs). A constant
//! *input* is covered too, though BLIP-2 stage one has none: LAVIS trains `ln_vision`, so the
//! image features the cross-attention projects carry a gradient (stage-one step time and peak
//! heap measured unchanged).
//!
//! PyTorch skips both (`needs_input_grad`). [`matmul_t`] does too: when exactly one operand
//! tracks a gradient, the product is a custom op on that operand that holds the other as a
//! constant, and its backward is the one GEMM that is needed.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor};

/// The constant side of `x · wᵀ`; the custom op's argument is the other one.
enum Constant {
    /// `x` is constant and `w` is the argument (only `∂w` is computed).
    Input(Tensor),
    /// `w` is constant and `x` is the argument (only `∂x` is computed).
    Weight(Tensor),
}

struct OneSidedMatmulT(Constant);

/// `x [m, k] · w[n, k]ᵀ` on any backend's storage (the transpose is a layout, not a copy).
fn product<S: BackendStorage>(
    x: &S,
    x_layout: &Layout,
    w: &S,
    w_layout: &Layout,
) -> Result<(S, Shape)> {
    let (m, k) = x_layout.shape().dims2()?;
    let (n, kw) = w_layout.shape().dims2()?;
    if k != kw {
        candle_core::bail!(
            "matmul_t: x {:?} and w {:?} differ in the inner dim",
            x_layout.shape(),
            w_layout.shape()
        )
    }
    let wt = w_layout.transpose(0, 1)?;
    Ok((x.matmul(w, (1, m, n, k), x_layout, &wt)?, Shape::from((m, n))))
}

impl OneSidedMatmulT {
    fn held(&self) -> &Tensor {
        match &self.0 {
            Constant::Input(t) | Constant::Weight(t) => t,
        }
    }

    /// The product with the argument and the held constant each in their place.
    fn forward<S: BackendStorage>(
        &self,
        arg: &S,
        arg_layout: &Layout,
        held: &S,
        held_layout: &Layout,
    ) -> Result<(S, Shape)> {
        match &self.0 {
            Constant::Input(_) => product(held, held_layout, arg, arg_layout),
            Constant::Weight(_) => product(arg, arg_layout, held, held_layout),
        }
    }
}

impl CustomOp1 for OneSidedMatmulT {
    fn name(&self) -> &'static str {
        "qformer-one-sided-matmul-t"
    }

    fn cpu_fwd(&self, arg: &CpuStorage, arg_layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (storage, layout) = self.held().storage_and_layout();
        let Storage::Cpu(held) = &*storage else {
            candle_core::bail!("matmul_t: operands on different devices")
        };
        self.forward(arg, arg_layout, held, layout)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        arg: &candle_core::CudaStorage,
        arg_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (storage, layout) = self.held().storage_and_layout();
        let Storage::Cuda(held) = &*storage else {
            candle_core::bail!("matmul_t: operands on different devices")
        };
        self.forward(arg, arg_layout, held, layout)
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // grad: [m, n]
        match &self.0 {
            Constant::Input(x) => Ok(Some(grad.t()?.matmul(x)?)), // ∂w: [n, m] · [m, k]
            Constant::Weight(w) => Ok(Some(grad.matmul(w)?)),     // ∂x: [m, n] · [n, k]
        }
    }
}

/// `x · wᵀ` with candle's matmul where both or neither operand tracks a gradient, and the
/// one-sided op where exactly one does. Values are the same GEMM either way.
// x: [m, k], w: [n, k] -> [m, n]
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let contiguous = |t: &Tensor| if t.device().is_cpu() { Ok(t.clone()) } else { t.contiguous() };
    match (x.track_op(), w.track_op()) {
        (false, true) => w.apply_op1_arc(std::sync::Arc::new(Box::new(OneSidedMatmulT(
            Constant::Input(contiguous(x)?),
        )))),
        (true, false) => {
            // candle's CUDA matmul refuses row-strided operands (see `Linear`).
            let x = contiguous(x)?;
            x.apply_op1_arc(std::sync::Arc::new(Box::new(OneSidedMatmulT(Constant::Weight(
                w.clone(),
            )))))
        }
        _ => contiguous(x)?.matmul(&w.t()?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn data(shape: (usize, usize), offset: f32) -> Tensor {
        let n = shape.0 * shape.1;
        let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37 + offset).sin()).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// Loss = Σ (x·wᵀ ⊙ c), so ∂x = c·w and ∂w = cᵀ·x: the reference gradients.
    fn weighted_sum(y: &Tensor, c: &Tensor) -> Tensor {
        (y * c).unwrap().sum_all().unwrap()
    }

    #[test]
    fn a_constant_input_gets_no_gradient_and_the_weight_the_right_one() {
        let x = data((6, 5), 0.0);
        let w = Var::from_tensor(&data((4, 5), 1.0)).unwrap();
        let c = data((6, 4), 2.0);
        let y = matmul_t(&x, w.as_tensor()).unwrap();
        assert!(max_diff(&y, &x.matmul(&w.as_tensor().t().unwrap()).unwrap()) < 1e-6);
        let grads = weighted_sum(&y, &c).backward().unwrap();
        let gw = grads.get(w.as_tensor()).expect("the weight has a gradient");
        assert!(max_diff(gw, &c.t().unwrap().matmul(&x).unwrap()) < 1e-5);
        assert!(grads.get(&x).is_none(), "the constant input got a gradient");
    }

    #[test]
    fn a_constant_weight_gets_no_gradient_and_the_input_the_right_one() {
        let x = Var::from_tensor(&data((6, 5), 0.5)).unwrap();
        let w = data((4, 5), 1.5);
        let c = data((6, 4), 2.5);
        let y = matmul_t(x.as_tensor(), &w).unwrap();
        assert!(max_diff(&y, &x.as_tensor().matmul(&w.t().unwrap()).unwrap()) < 1e-6);
        let grads = weighted_sum(&y, &c).backward().unwrap();
        let gx = grads.get(x.as_tensor()).expect("the input has a gradient");
        assert!(max_diff(gx, &c.matmul(&w).unwrap()) < 1e-5);
        assert!(grads.get(&w).is_none(), "the constant weight got a gradient");
    }

    #[test]
    fn strided_rows_and_two_tracked_operands_match_candle() {
        // A tracked input reaching the op through a row-strided view, as the [CLS] rows do.
        let x = Var::from_tensor(&data((6, 10), 0.25)).unwrap();
        let rows = x.as_tensor().narrow(1, 2, 5).unwrap();
        assert!(!rows.is_contiguous());
        let w = Var::from_tensor(&data((4, 5), 0.75)).unwrap();
        let c = data((6, 4), 1.25);
        for w_const in [true, false] {
            let wt = if w_const { w.as_tensor().detach() } else { w.as_tensor().clone() };
            let ours = weighted_sum(&matmul_t(&rows, &wt).unwrap(), &c).backward().unwrap();
            let want =
                weighted_sum(&rows.matmul(&wt.t().unwrap()).unwrap(), &c).backward().unwrap();
            let (a, b) = (ours.get(x.as_tensor()).unwrap(), want.get(x.as_tensor()).unwrap());
            assert!(max_diff(a, b) < 1e-5);
            if !w_const {
                let (a, b) = (ours.get(w.as_tensor()).unwrap(), want.get(w.as_tensor()).unwrap());
                assert!(max_diff(a, b) < 1e-5);
            }
        }
    }
}
