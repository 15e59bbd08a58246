//! `(x · wᵀ + b) · scale`, a linear layer's product, as one graph node whose backward computes
//! only the gradients that are wanted.
//!
//! Two things candle's composite (`matmul` then `broadcast_add`) costs that this op does not:
//! - **Gradients nobody asked for.** candle's matmul backward computes both operands' gradients
//!   even when one is a constant and keeps that gradient in the store. The constant that matters
//!   is **a frozen LLM**: in stage two every OPT/T5 weight, the tied `[vocab, H]` LM head
//!   included, is a constant while gradients flow through it to the soft prompt, so candle
//!   computes and drops a weight gradient per layer (one of the three GEMMs a frozen layer
//!   costs). PyTorch skips it (`needs_input_grad`); so does this op, per operand.
//! - **Intermediates nobody reads.** candle keeps every node of the forward graph alive until
//!   the gradients are dropped, and the bare product `x · wᵀ` is a node of its own under the
//!   bias add, although the add's backward never reads it; so is the query projection before the
//!   attention's `1/√d` scaling. One node per linear layer is a quarter of a stage-one step's
//!   activations at BLIP-2 size (measured: README, Performance). Here the bias and the scale
//!   are applied in place on the GEMM's output, so a linear layer keeps one `[rows, out]`
//!   tensor, as in PyTorch.
//!
//! The forward is candle's own storage-level GEMM on any backend (the transpose of `w` is a
//! layout, not a copy); the bias and the scale are added in place on the CPU and by candle's
//! storage ops elsewhere.

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::op::Add;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::half_weight;

/// `(x · wᵀ + b) · scale`, remembering which operands want a gradient (fixed when the node is
/// built: a tensor's `track_op` cannot change later).
struct LinearProduct {
    scale: f64,
    /// `x`, `w`, `b` track a gradient
    wants: [bool; 3],
    /// Write the output split into attention heads, `[B, heads, T, out / heads]` for `B · T`
    /// input rows, instead of `[rows, out]`.
    heads: Option<HeadSplit>,
}

/// The attention-head layout of a projection's output.
#[derive(Clone, Copy)]
struct HeadSplit {
    batch: usize,
    heads: usize,
}

impl HeadSplit {
    /// `(B, T, heads, head_dim)` for a `[rows, n]` product.
    fn dims(&self, rows: usize, n: usize) -> Result<(usize, usize, usize, usize)> {
        let (b, h) = (self.batch, self.heads);
        if b == 0 || h == 0 || !rows.is_multiple_of(b) || !n.is_multiple_of(h) {
            candle_core::bail!("linear: cannot split [{rows}, {n}] into {b} batch rows x {h} heads")
        }
        Ok((b, rows / b, h, n / h))
    }

    /// The `[B, T, heads, hd]` product read as `[B, heads, T, hd]`.
    fn source_layout(&self, rows: usize, n: usize) -> Result<Layout> {
        let (b, t, h, d) = self.dims(rows, n)?;
        Layout::contiguous((b, t, h, d)).transpose(1, 2)
    }
}

/// `x [m, k] · w[n, k]ᵀ` on any backend's storage.
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
            "linear: input {:?} and weight {:?} differ in the inner dim",
            x_layout.shape(),
            w_layout.shape()
        )
    }
    let wt = w_layout.transpose(0, 1)?;
    Ok((x.matmul(w, (1, m, n, k), x_layout, &wt)?, Shape::from((m, n))))
}

/// [`product`] on the CPU, where the weight may be a frozen bf16/f16 matrix kept as stored
/// while the input is f32 ([`super::half_weight`]); any other dtype pair gets the weight
/// converted to the input's dtype for this call.
fn cpu_product(
    x: &CpuStorage,
    x_layout: &Layout,
    w: &CpuStorage,
    w_layout: &Layout,
) -> Result<(CpuStorage, Shape)> {
    if x.dtype() == w.dtype() {
        return product(x, x_layout, w, w_layout);
    }
    if let CpuStorage::F32(xv) = x {
        if half_weight::is_half_weight(w, w_layout) {
            let (out, shape) = half_weight::matmul_half_t(xv, x_layout, w, w_layout)?;
            return Ok((CpuStorage::F32(out), shape));
        }
    }
    let w = w.to_dtype(w_layout, x.dtype())?;
    product(x, x_layout, &w, &Layout::contiguous(w_layout.shape()))
}

/// `out [m, n] <- (out + b) · scale`, through storage ops (any backend, any dtype).
fn bias_scale_generic<S: BackendStorage>(
    out: S,
    shape: &Shape,
    bias: Option<(&S, &Layout)>,
    scale: f64,
) -> Result<S> {
    let layout = Layout::contiguous(shape);
    let out = match bias {
        Some((b, b_layout)) => {
            check_bias(b_layout, shape)?;
            out.binary_impl::<Add>(b, &layout, &b_layout.broadcast_as(shape.clone())?)?
        }
        None => out,
    };
    if scale == 1.0 {
        Ok(out)
    } else {
        out.affine(&layout, scale, 0.0)
    }
}

fn check_bias(b_layout: &Layout, shape: &Shape) -> Result<()> {
    let n = shape.dims()[1];
    if b_layout.shape().dims() != [n] {
        candle_core::bail!("linear: bias {:?} does not fit {n} outputs", b_layout.shape())
    }
    Ok(())
}

/// `out [m, n] <- (out + b) · scale` in place, rows split across threads.
fn bias_scale_f32(out: &mut [f32], n: usize, bias: Option<&[f32]>, scale: f32) {
    let rows_per_task = (super::fused::ELEMS_PER_TASK / n.max(1)).max(1);
    out.par_chunks_mut(n * rows_per_task).for_each(|chunk| {
        for row in chunk.chunks_exact_mut(n) {
            match bias {
                Some(b) if scale == 1.0 => row.iter_mut().zip(b).for_each(|(o, &b)| *o += b),
                Some(b) => row.iter_mut().zip(b).for_each(|(o, &b)| *o = (*o + b) * scale),
                None => row.iter_mut().for_each(|o| *o *= scale),
            }
        }
    });
}

impl LinearProduct {
    fn needs_epilogue(&self, has_bias: bool) -> bool {
        has_bias || self.scale != 1.0
    }

    fn cpu_forward(
        &self,
        (x, x_layout): (&CpuStorage, &Layout),
        (w, w_layout): (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        if self.heads.is_some() {
            return self.cpu_forward_heads((x, x_layout), (w, w_layout), bias);
        }
        let (out, shape) = cpu_product(x, x_layout, w, w_layout)?;
        if !self.needs_epilogue(bias.is_some()) {
            return Ok((out, shape));
        }
        let n = shape.dims()[1];
        let f32_bias = match bias {
            None => Some(None),
            Some((CpuStorage::F32(b), l)) => {
                check_bias(l, &shape)?;
                l.contiguous_offsets().map(|(o0, o1)| Some(&b[o0..o1]))
            }
            Some(_) => None,
        };
        match (out, f32_bias) {
            (CpuStorage::F32(mut out), Some(b)) => {
                bias_scale_f32(&mut out, n, b, self.scale as f32);
                Ok((CpuStorage::F32(out), shape))
            }
            (out, _) => Ok((bias_scale_generic(out, &shape, bias, self.scale)?, shape)),
        }
    }

    fn generic_forward<S: BackendStorage>(
        &self,
        (x, x_layout): (&S, &Layout),
        (w, w_layout): (&S, &Layout),
        bias: Option<(&S, &Layout)>,
    ) -> Result<(S, Shape)>
    where
        S::Device: BackendDevice<Storage = S>,
    {
        let (out, shape) = product(x, x_layout, w, w_layout)?;
        let out = if self.needs_epilogue(bias.is_some()) {
            bias_scale_generic(out, &shape, bias, self.scale)?
        } else {
            out
        };
        let Some(split) = self.heads else { return Ok((out, shape)) };
        let (rows, n) = shape.dims2()?;
        let src = split.source_layout(rows, n)?;
        // SAFETY: every element is written by the copy below.
        let mut dst = unsafe { out.device().alloc_uninit(src.shape(), out.dtype())? };
        out.copy_strided_src(&mut dst, 0, &src)?;
        Ok((dst, src.shape().clone()))
    }

    /// The head-split forward: the GEMM's `[rows, n]` output is a scratch buffer, and the
    /// bias, the scale and the head transpose are one pass writing the `[B, heads, T, hd]`
    /// result (so neither the product nor an unsplit copy outlives the call).
    fn cpu_forward_heads(
        &self,
        (x, x_layout): (&CpuStorage, &Layout),
        (w, w_layout): (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let split = self.heads.expect("called for a head split");
        let bias_f32 = match bias {
            None => Some(None),
            Some((CpuStorage::F32(b), l)) => {
                l.contiguous_offsets().map(|(o0, o1)| Some(&b[o0..o1]))
            }
            Some(_) => None,
        };
        let (CpuStorage::F32(_), Some(bias_f32)) = (x, bias_f32) else {
            return self.generic_forward((x, x_layout), (w, w_layout), bias);
        };
        let (out, shape) = cpu_product(x, x_layout, w, w_layout)?;
        let CpuStorage::F32(scratch) = out else { unreachable!("an f32 product") };
        let (rows, n) = shape.dims2()?;
        if let Some((_, l)) = bias {
            check_bias(l, &shape)?;
        }
        let (_, t, h, d) = split.dims(rows, n)?;
        let scale = self.scale as f32;
        let mut dst = vec![0f32; scratch.len()];
        // One (batch row, head) block of `[T, hd]` per task.
        dst.par_chunks_mut(t * d).enumerate().for_each(|(block, out)| {
            let (bi, hi) = (block / h, block % h);
            let bias = bias_f32.map(|b| &b[hi * d..(hi + 1) * d]);
            for (ti, o) in out.chunks_exact_mut(d).enumerate() {
                let src = &scratch[(bi * t + ti) * n + hi * d..][..d];
                match bias {
                    Some(b) => {
                        o.iter_mut().zip(src).zip(b).for_each(|((o, &v), &b)| *o = (v + b) * scale)
                    }
                    None => o.iter_mut().zip(src).for_each(|(o, &v)| *o = v * scale),
                }
            }
        });
        Ok((CpuStorage::F32(dst), split.source_layout(rows, n)?.shape().clone()))
    }

    /// `(∂x, ∂w, ∂b)` for the operands that want one. grad: [m, n]
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = match self.heads {
            // [B, heads, T, hd] -> [B·T, heads·hd]
            Some(_) => {
                let (b, h, t, d) = grad.dims4()?;
                grad.transpose(1, 2)?.contiguous()?.reshape((b * t, h * d))?
            }
            None => grad.clone(),
        };
        let g = if self.scale == 1.0 { grad } else { grad.affine(self.scale, 0.0)? };
        let [want_x, want_w, want_b] = self.wants;
        // Detached: `w` and `x` track gradients, so a product with them would be a graph node
        // holding them, and a weight's gradient would keep the whole forward graph (and every
        // upstream gradient) alive after the backward. candle detaches the gradients it passes
        // between nodes, but the ones handed to leaves are kept as returned.
        // A frozen half-precision weight is widened for this product only.
        let dx = if want_x {
            let w = if w.dtype() == g.dtype() { w.clone() } else { w.to_dtype(g.dtype())? };
            Some(g.matmul(&w)?.detach()) // [m, n] · [n, k]
        } else {
            None
        };
        let dw = if want_w { Some(g.t()?.matmul(x)?.detach()) } else { None }; // [n, m] · [m, k]
        let db = if want_b { Some(g.sum(0)?.detach()) } else { None };
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for LinearProduct {
    fn name(&self) -> &'static str {
        "qformer-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu_forward((x, x_layout), (w, w_layout), None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_layout: &Layout,
        w: &candle_core::CudaStorage,
        w_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.generic_forward((x, x_layout), (w, w_layout), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, w, grad)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for LinearProduct {
    fn name(&self) -> &'static str {
        "qformer-linear-bias"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
        b: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu_forward((x, x_layout), (w, w_layout), Some((b, b_layout)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_layout: &Layout,
        w: &candle_core::CudaStorage,
        w_layout: &Layout,
        b: &candle_core::CudaStorage,
        b_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.generic_forward((x, x_layout), (w, w_layout), Some((b, b_layout)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.grads(x, w, grad)
    }
}

/// `(x · wᵀ + b) · scale` as one node; its backward computes `∂x`, `∂w`, `∂b` only for the
/// operands that track a gradient. Off the CPU the input is made contiguous: candle's CUDA
/// matmul refuses a row-strided operand (see `Linear`).
// x: [m, k], w: [n, k], b: [n] -> [m, n]
pub fn linear_product(x: &Tensor, w: &Tensor, b: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    apply(x, w, b, scale, None)
}

/// [`linear_product`] written split into attention heads: the `B · T` rows of `x` give
/// `[B, heads, T, n / heads]`, the layout attention multiplies in, with no `[rows, n]` tensor
/// kept beside it (the split is otherwise a transpose copy, and candle keeps both).
// x: [B·T, k], w: [n, k], b: [n] -> [B, heads, T, n / heads]
pub fn linear_product_heads(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    scale: f64,
    batch: usize,
    heads: usize,
) -> Result<Tensor> {
    apply(x, w, b, scale, Some(HeadSplit { batch, heads }))
}

fn apply(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    scale: f64,
    heads: Option<HeadSplit>,
) -> Result<Tensor> {
    let x = if x.device().is_cpu() { x.clone() } else { x.contiguous()? };
    // Off the CPU a frozen half-precision weight is widened per call (the CPU multiplies it as
    // stored, see `cpu_product`).
    let w_wide;
    let w = if !x.device().is_cpu() && w.dtype() != x.dtype() {
        w_wide = w.to_dtype(x.dtype())?;
        &w_wide
    } else {
        w
    };
    let op = LinearProduct {
        scale,
        wants: [x.track_op(), w.track_op(), b.is_some_and(|b| b.track_op())],
        heads,
    };
    match b {
        Some(b) => x.apply_op3_arc(w, b, std::sync::Arc::new(Box::new(op))),
        None => x.apply_op2_arc(w, std::sync::Arc::new(Box::new(op))),
    }
}

/// `x · wᵀ` (a linear layer without bias, a tied LM head).
// x: [m, k], w: [n, k] -> [m, n]
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    apply(x, w, None, 1.0, None)
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

    #[test]
    fn bias_and_scale_match_the_composite_for_every_tracking_combination() {
        let (x, w, b) = (
            Var::from_tensor(&data((7, 5), 0.1)).unwrap(),
            Var::from_tensor(&data((3, 5), 0.2)).unwrap(),
            Var::from_tensor(&data((1, 3), 0.3).squeeze(0).unwrap()).unwrap(),
        );
        let c = data((7, 3), 0.4);
        for mask in 0..8u32 {
            let pick = |v: &Var, bit: u32| {
                if mask & (1 << bit) != 0 {
                    v.as_tensor().clone()
                } else {
                    v.as_tensor().detach()
                }
            };
            let (xt, wt, bt) = (pick(&x, 0), pick(&w, 1), pick(&b, 2));
            let scale = 0.37;
            let ours = linear_product(&xt, &wt, Some(&bt), scale).unwrap();
            let want =
                (xt.matmul(&wt.t().unwrap()).unwrap().broadcast_add(&bt).unwrap() * scale).unwrap();
            assert!(max_diff(&ours, &want) < 1e-6, "values, tracking mask {mask:03b}");
            if mask == 0 {
                assert!(!ours.track_op());
                continue;
            }
            let (g_ours, g_want) = (
                weighted_sum(&ours, &c).backward().unwrap(),
                weighted_sum(&want, &c).backward().unwrap(),
            );
            for (bit, v) in [(0, &x), (1, &w), (2, &b)] {
                let (got, expect) = (g_ours.get(v.as_tensor()), g_want.get(v.as_tensor()));
                if mask & (1 << bit) == 0 {
                    assert!(got.is_none(), "operand {bit} is constant but got a gradient");
                } else {
                    let (got, expect) = (got.unwrap(), expect.unwrap());
                    assert!(max_diff(got, expect) < 1e-5, "gradient {bit}, mask {mask:03b}");
                }
            }
        }
    }

    #[test]
    fn the_graph_keeps_one_node_per_linear_layer() {
        // candle keeps every node alive until the gradients drop: the product before the bias
        // and the projection before the scale must not be nodes of their own.
        let x = Var::from_tensor(&data((4, 6), 0.0)).unwrap();
        let w = Var::from_tensor(&data((5, 6), 1.0)).unwrap();
        let b = Var::from_tensor(&data((1, 5), 2.0).squeeze(0).unwrap()).unwrap();
        let y = linear_product(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), 0.5).unwrap();
        // y and its three operands.
        assert_eq!(y.sorted_nodes().len(), 4);
    }

    #[test]
    fn gradients_hold_no_graph() {
        // A weight's gradient that tracked `x` would keep the forward graph alive after the
        // backward (measured: 3.7 GB more live heap after a BLIP-2 stage-one step).
        let x = Var::from_tensor(&data((4, 6), 0.0)).unwrap();
        let w = Var::from_tensor(&data((5, 6), 1.0)).unwrap();
        let b = Var::from_tensor(&data((1, 5), 2.0).squeeze(0).unwrap()).unwrap();
        let h = (x.as_tensor() * 2.0).unwrap(); // an activation, not a leaf
        let y = linear_product(&h, w.as_tensor(), Some(b.as_tensor()), 0.5).unwrap();
        let grads = weighted_sum(&y, &data((4, 5), 3.0)).backward().unwrap();
        for v in [&x, &w, &b] {
            assert!(!grads.get(v.as_tensor()).unwrap().track_op());
        }
    }

    #[test]
    fn the_head_split_equals_the_split_of_the_product_in_values_and_gradients() {
        let (batch, t, heads, hd, k) = (2, 3, 4, 2, 5);
        let x = Var::from_tensor(&data((batch * t, k), 0.6)).unwrap();
        let w = Var::from_tensor(&data((heads * hd, k), 0.7)).unwrap();
        let b = Var::from_tensor(&data((1, heads * hd), 0.8).squeeze(0).unwrap()).unwrap();
        let c = Tensor::from_vec(
            (0..batch * heads * t * hd).map(|i| (i as f32 * 0.21).cos()).collect(),
            (batch, heads, t, hd),
            &Device::Cpu,
        )
        .unwrap();
        let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
        let ours = linear_product_heads(xt, wt, Some(bt), 0.3, batch, heads).unwrap();
        assert_eq!(ours.dims(), [batch, heads, t, hd]);
        assert_eq!(ours.sorted_nodes().len(), 4, "the split is not a node of its own");
        let want = linear_product(xt, wt, Some(bt), 0.3)
            .unwrap()
            .reshape((batch, t, heads, hd))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap();
        assert!(max_diff(&ours, &want) < 1e-6);
        let (g_ours, g_want) = (
            (&ours * &c).unwrap().sum_all().unwrap().backward().unwrap(),
            (&want * &c).unwrap().sum_all().unwrap().backward().unwrap(),
        );
        for v in [xt, wt, bt] {
            assert!(max_diff(g_ours.get(v).unwrap(), g_want.get(v).unwrap()) < 1e-5);
        }
        // The same without a bias (the generic epilogue-free path).
        let plain = linear_product_heads(xt, wt, None, 1.0, batch, heads).unwrap();
        let want = matmul_t(xt, wt).unwrap().reshape((batch, t, heads, hd)).unwrap();
        assert!(max_diff(&plain, &want.transpose(1, 2).unwrap().contiguous().unwrap()) < 1e-6);
    }
}
