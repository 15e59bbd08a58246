//! Fused, multi-threaded CPU kernels, each with its own fused backward: LayerNorm, softmax over
//! the last dim, GELU. Results and gradients equal the composite ops' to f32 rounding (tests
//! below).
//!
//! Why fuse on a training path: candle keeps every node of the forward graph alive until the
//! gradients are dropped, so a composite LayerNorm holds nine `[rows, H]` tensors and a composite
//! softmax four `[.., K]` ones per call. At BLIP-2 size those were 2+ GB of a stage-one step's
//! 5.9 GB of activations. A fused op holds its input and output only, and its backward
//! recomputes row statistics instead of storing them.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

use super::fast_math;

/// True when all of `ts` are contiguous f32 on the CPU (what the kernels here read).
pub(crate) fn fusable(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| cpu_f32(t))
}

/// LayerNorm over the last dim with a two-pass (centered) variance in f32, as the composite
/// `nn::LayerNorm` computes it (candle's own fused kernel uses E[x²] − mean², which loses digits
/// when the mean is large).
struct LayerNormOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "qformer-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) = (s1, s2, s3) else {
            candle_core::bail!("qformer-layer-norm: f32 only")
        };
        let (Some((x0, x1)), Some((w0, w1)), Some((b0, b1))) =
            (l1.contiguous_offsets(), l2.contiguous_offsets(), l3.contiguous_offsets())
        else {
            candle_core::bail!("qformer-layer-norm: inputs must be contiguous")
        };
        let (x, w, b) = (&x[x0..x1], &w[w0..w1], &b[b0..b1]);
        let h = w.len();
        if h == 0 || b.len() != h || x.len() % h != 0 {
            candle_core::bail!("qformer-layer-norm: {:?} does not end in {h}", l1.shape())
        }
        let mut out = vec![0f32; x.len()];
        let eps = self.eps;
        let chunk = h * ln_rows_per_task(h);
        out.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(out, x)| {
            for (o, row) in out.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
                // The same statistics the backward recomputes.
                let (mean, inv) = row_stats(row, eps);
                for (((o, &v), &w), &b) in o.iter_mut().zip(row).zip(w).zip(b) {
                    *o = (v - mean) * inv * w + b;
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = weight.dim(0)?;
        let rows = x.elem_count() / h.max(1);
        let grad = grad_res.contiguous()?;
        let all = x.apply_op3_no_bwd(weight, &grad, &LayerNormGradOp { eps: self.eps })?;
        let gx = all.narrow(0, 0, rows)?.reshape(x.shape())?;
        let gw = all.get(rows)?;
        let gb = all.get(rows + 1)?;
        Ok((Some(gx), Some(gw), Some(gb)))
    }
}

// x: [..., H], weight/bias: [H] -> [..., H]
pub(crate) fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let op = LayerNormOp { eps: eps as f32 };
    if [x, weight, bias].iter().any(|t| t.track_op()) {
        x.apply_op3(weight, bias, op)
    } else {
        x.apply_op3_no_bwd(weight, bias, &op)
    }
}

/// Mean and 1/sqrt(var + eps) of one row (two-pass, as the forward).
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let h = row.len() as f32;
    let mean = row.iter().sum::<f32>() / h;
    let var = row.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / h;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Rows per rayon task of the LayerNorm kernels (~64 KB of each input per task: enough work to
/// amortize rayon, enough tasks to balance). Fixed by `h` alone, so the weight/bias gradient sums run in the same order on any number of threads.
fn ln_rows_per_task(h: usize) -> usize {
    (16384 / h).max(1)
}

/// LayerNorm backward in one pass over the rows: `[rows + 2, H]` = the input gradient, then
/// the weight and the bias gradient (summed per task, then over tasks in order).
struct LayerNormGradOp {
    eps: f32,
}

impl CustomOp3 for LayerNormGradOp {
    fn name(&self) -> &'static str {
        "qformer-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let w = f32_slice(s2, l2, self.name())?;
        let g = f32_slice(s3, l3, self.name())?;
        let h = w.len();
        if h == 0 || x.len() % h != 0 || g.len() != x.len() {
            candle_core::bail!("qformer-layer-norm-grad: {:?} does not end in {h}", l1.shape())
        }
        let rows = x.len() / h;
        let chunk = h * ln_rows_per_task(h);
        let mut out = vec![0f32; x.len() + 2 * h];
        let (gx, _) = out.split_at_mut(x.len());
        let eps = self.eps;
        let partials: Vec<Vec<f32>> = gx
            .par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
            .map(|(gx, (x, g))| {
                // [gw | gb] of this task's rows
                let mut acc = vec![0f32; 2 * h];
                let mut gy = vec![0f32; h];
                for ((gx, x), g) in
                    gx.chunks_exact_mut(h).zip(x.chunks_exact(h)).zip(g.chunks_exact(h))
                {
                    let (mean, inv) = row_stats(x, eps);
                    let (mut sum_gy, mut sum_gy_xhat) = (0f32, 0f32);
                    for i in 0..h {
                        let xhat = (x[i] - mean) * inv;
                        gy[i] = g[i] * w[i];
                        sum_gy += gy[i];
                        sum_gy_xhat += gy[i] * xhat;
                        acc[i] += g[i] * xhat;
                        acc[h + i] += g[i];
                    }
                    let (m1, m2) = (sum_gy / h as f32, sum_gy_xhat / h as f32);
                    for i in 0..h {
                        let xhat = (x[i] - mean) * inv;
                        gx[i] = inv * (gy[i] - m1 - xhat * m2);
                    }
                }
                acc
            })
            .collect();
        let tail = &mut out[rows * h..];
        for p in &partials {
            for (t, v) in tail.iter_mut().zip(p) {
                *t += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, h))))
    }
}

/// Softmax over the last dim (max-subtracted, like candle's), rows in parallel, of `x + mask`
/// when an additive attention mask is given. Its backward needs only the output:
/// `dx = y (g - sum(g y))`. Adding the mask inside saves the masked scores, a node as large as
/// the scores that candle would keep alive, and the mask's own gradient, which candle's add
/// computes though the mask is a constant.
#[derive(Default)]
struct SoftmaxOp {
    mask: Option<RowMask>,
}

/// An additive mask `[B, 1, T, K]` over scores `[B, heads, T, K]`, stored contiguous.
struct RowMask {
    values: Vec<f32>,
    heads: usize,
    rows_per_head: usize,
}

impl RowMask {
    /// The mask row added to score row `r` (rows counted over `[B, heads, T]`).
    fn row(&self, r: usize, k: usize) -> &[f32] {
        let (t, bh) = (r % self.rows_per_head, r / self.rows_per_head);
        let b = bh / self.heads;
        &self.values[(b * self.rows_per_head + t) * k..][..k]
    }
}

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "qformer-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let k = l.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; x.len()];
        let rows_per_task = (ELEMS_PER_TASK / k).max(1);
        let chunk = k * rows_per_task;
        out.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).enumerate().for_each(|(ci, (o, x))| {
            for (ri, (o, x)) in o.chunks_exact_mut(k).zip(x.chunks_exact(k)).enumerate() {
                if let Some(mask) = &self.mask {
                    // The same f32 sum the composite `x + mask` computes.
                    let m = mask.row(ci * rows_per_task + ri, k);
                    o.iter_mut().zip(x).zip(m).for_each(|((o, &v), &m)| *o = v + m);
                } else {
                    o.copy_from_slice(x);
                }
                let max = fast_math::max(o);
                let inv = 1.0 / fast_math::exp_shifted_sum(o, max);
                for o in o.iter_mut() {
                    *o *= inv;
                }
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad_res.contiguous()?;
        Ok(Some(res.apply_op2_no_bwd(&grad, &SoftmaxGradOp)?))
    }
}

/// `y (g - sum(g y))` per row of the last dim.
struct SoftmaxGradOp;

impl CustomOp2 for SoftmaxGradOp {
    fn name(&self) -> &'static str {
        "qformer-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        if y.len() != g.len() {
            candle_core::bail!("qformer-softmax-grad: {:?} vs {:?}", l1.shape(), l2.shape())
        }
        let k = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; y.len()];
        let chunk = k * (ELEMS_PER_TASK / k).max(1);
        out.par_chunks_mut(chunk).zip(y.par_chunks(chunk).zip(g.par_chunks(chunk))).for_each(
            |(o, (y, g))| {
                for ((o, y), g) in
                    o.chunks_exact_mut(k).zip(y.chunks_exact(k)).zip(g.chunks_exact(k))
                {
                    let dot = fast_math::dot(y, g);
                    for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
                        *o = y * (g - dot);
                    }
                }
            },
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Softmax over the last dim with a fused backward, on contiguous f32 CPU tensors; `None`
/// elsewhere (the caller takes candle's ops).
// x: [..., K] -> [..., K]
pub(crate) fn softmax_last_dim(x: &Tensor) -> Option<Result<Tensor>> {
    cpu_f32(x).then(|| x.apply_op1(SoftmaxOp::default()))
}

/// `softmax(scores + mask)` over the last dim in one node, on contiguous f32 CPU scores and an
/// f32 CPU mask `[B, 1, T, K]` (or anything that broadcasts to it, such as `[B, 1, 1, K]`);
/// `None` elsewhere.
// scores: [B, heads, T, K], mask: [B, 1, T, K] -> [B, heads, T, K]
pub(crate) fn masked_softmax(scores: &Tensor, mask: &Tensor) -> Option<Result<Tensor>> {
    let cpu_mask = mask.dtype() == DType::F32 && matches!(mask.device(), Device::Cpu);
    (cpu_f32(scores) && cpu_mask && scores.rank() == 4).then(|| {
        let (b, heads, t, k) = scores.dims4()?;
        let values = mask.broadcast_as((b, 1, t, k))?.flatten_all()?.to_vec1::<f32>()?;
        let mask = RowMask { values, heads, rows_per_head: t };
        scores.apply_op1(SoftmaxOp { mask: Some(mask) })
    })
}

/// Contiguous f32 on the CPU (what the hand-written kernels read).
pub(crate) fn cpu_f32(t: &Tensor) -> bool {
    t.dtype() == DType::F32 && matches!(t.device(), Device::Cpu) && t.is_contiguous()
}

pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: expected a contiguous f32 tensor"),
    }
}

/// Elements per rayon task of the element-wise kernels.
pub(crate) const ELEMS_PER_TASK: usize = 1 << 14;

/// Exact (erf) GELU, HF "gelu": `0.5 x (1 + erf(x / √2))`, element-wise over rayon tasks (candle's
/// unary ops run on one thread). Its backward is the fused derivative below, so it may sit on a
/// training path: `gelu_matches_candle_values_and_gradients` checks both against candle's
/// `gelu_erf`.
struct GeluErfOp;

impl candle_core::CustomOp1 for GeluErfOp {
    fn name(&self) -> &'static str {
        "qformer-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(ELEMS_PER_TASK).zip(x.par_chunks(ELEMS_PER_TASK)).for_each(|(o, x)| {
            for (o, &v) in o.iter_mut().zip(x) {
                *o = (fast_math::erf(v * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * v;
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad_res.contiguous()?;
        Ok(Some(arg.apply_op2_no_bwd(&grad, &GeluErfGradOp)?))
    }
}

/// `grad · d/dx gelu(x)` = `grad · (Φ(x) + x φ(x))`, the derivative candle's `gelu_erf` uses.
struct GeluErfGradOp;

impl candle_core::CustomOp2 for GeluErfGradOp {
    fn name(&self) -> &'static str {
        "qformer-gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        if x.len() != g.len() {
            candle_core::bail!("{}: {:?} vs {:?}", self.name(), l1.shape(), l2.shape())
        }
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(ELEMS_PER_TASK)
            .zip(x.par_chunks(ELEMS_PER_TASK).zip(g.par_chunks(ELEMS_PER_TASK)))
            .for_each(|(o, (x, g))| {
                for ((o, &v), &g) in o.iter_mut().zip(x).zip(g) {
                    let cdf = 0.5 + 0.5 * fast_math::erf(v * std::f32::consts::FRAC_1_SQRT_2);
                    let pdf = INV_SQRT_2PI * fast_math::exp(-0.5 * v * v);
                    *o = g * (cdf + v * pdf);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Exact GELU: the fused kernel (with its backward) on contiguous f32 CPU tensors, candle's
/// `gelu_erf` elsewhere.
// x: [...] -> [...]
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if cpu_f32(x) {
        x.apply_op1(GeluErfOp)
    } else {
        x.gelu_erf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn values(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919) % 2001) as f32 / 200.0 - 5.0).collect()
    }

    #[test]
    fn gelu_matches_candle_values_and_gradients() {
        let n = 3 * ELEMS_PER_TASK + 17; // several tasks and a ragged tail
        let x = Var::from_vec(values(n), n, &Device::Cpu).unwrap();
        let w =
            Tensor::from_vec(values(n).iter().rev().cloned().collect(), n, &Device::Cpu).unwrap();
        let ours = gelu(x.as_tensor()).unwrap();
        let theirs = x.as_tensor().gelu_erf().unwrap();
        let d = (&ours - &theirs).unwrap().abs().unwrap().max(0).unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
        let g_ours = (ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g_theirs = (theirs * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (a, b) = (g_ours.get(x.as_tensor()).unwrap(), g_theirs.get(x.as_tensor()).unwrap());
        // candle's derivative rounds 1/sqrt(2 pi) to 0.398942 (relative 2e-6).
        let d = (a - b).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 5e-5, "gradient differs by {d}");
        // A transposed (non-contiguous) input takes candle's path and still agrees.
        let m = Tensor::from_vec(values(12), (3, 4), &Device::Cpu).unwrap().t().unwrap();
        let d = (gelu(&m).unwrap() - m.gelu_erf().unwrap()).unwrap().abs().unwrap();
        assert_eq!(d.flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn layer_norm_matches_the_composite_one() {
        let (rows, h) = (37, 768);
        let x: Vec<f32> = values(rows * h).iter().map(|v| v * 3.0 + 100.0).collect();
        let x = Tensor::from_vec(x, (rows, h), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(values(h), h, &Device::Cpu).unwrap();
        let b =
            Tensor::from_vec(values(h).iter().map(|v| v * 0.1).collect(), h, &Device::Cpu).unwrap();
        let fused = layer_norm(&x, &w, &b, 1e-12).unwrap();
        let composite = crate::nn::LayerNorm::from_tensors(w.clone(), b.clone(), 1e-12);
        let slow = composite.forward_composite(&x).unwrap();
        let d = (fused - slow).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        // Outputs reach |9| and the row sums ~8e4, so f32 summation order alone moves ~1e-5.
        let d = d.to_scalar::<f32>().unwrap();
        assert!(d < 1e-4, "fused LayerNorm differs by {d}");
    }

    /// max |a - b| over all elements.
    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
        d.max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn layer_norm_gradients_match_the_composite_ones() {
        // Enough rows for several rayon tasks and a ragged last one.
        let (rows, h) = (3 * ln_rows_per_task(64) + 5, 64);
        let x = Var::from_vec(
            values(rows * h).iter().map(|v| v * 2.0 + 3.0).collect(),
            (rows, h),
            &Device::Cpu,
        )
        .unwrap();
        let w = Var::from_vec(values(h), h, &Device::Cpu).unwrap();
        let b =
            Var::from_vec(values(h).iter().map(|v| v * 0.1).collect(), h, &Device::Cpu).unwrap();
        let coef = Tensor::from_vec(
            values(rows * h).iter().rev().cloned().collect(),
            (rows, h),
            &Device::Cpu,
        )
        .unwrap();
        let ln =
            crate::nn::LayerNorm::from_tensors(w.as_tensor().clone(), b.as_tensor().clone(), 1e-6);
        let fused = candle_core::Module::forward(&ln, x.as_tensor()).unwrap();
        let slow = ln.forward_composite(x.as_tensor()).unwrap();
        assert!(max_diff(&fused, &slow) < 1e-5);
        let gf = (fused * &coef).unwrap().sum_all().unwrap().backward().unwrap();
        let gs = (slow * &coef).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in [("x", &x), ("weight", &w), ("bias", &b)] {
            let (a, b) = (gf.get(v.as_tensor()).unwrap(), gs.get(v.as_tensor()).unwrap());
            assert_eq!(a.dims(), b.dims(), "{name}");
            let scale =
                b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            let d = max_diff(a, b);
            assert!(d < 1e-5 * scale.max(1.0), "{name} gradient differs by {d} (scale {scale})");
        }
        // A 3-D input reshapes its gradient back.
        let x3 = Var::from_vec(values(2 * 3 * h), (2, 3, h), &Device::Cpu).unwrap();
        let g = candle_core::Module::forward(&ln, x3.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(g.get(x3.as_tensor()).unwrap().dims(), &[2, 3, h]);
    }

    #[test]
    fn layer_norm_weight_gradient_is_the_same_on_one_or_two_threads() {
        let (rows, h) = (4 * ln_rows_per_task(32) + 3, 32);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let x = Var::from_vec(values(rows * h), (rows, h), &Device::Cpu).unwrap();
                let w = Var::from_vec(values(h), h, &Device::Cpu).unwrap();
                let b = Tensor::zeros(h, DType::F32, &Device::Cpu).unwrap();
                let y = layer_norm(x.as_tensor(), w.as_tensor(), &b, 1e-6).unwrap();
                let g = (y.sqr().unwrap()).sum_all().unwrap().backward().unwrap();
                g.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap()
            })
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn softmax_values_and_gradients_match_candles() {
        for (rows, k) in [(7, 5), (3 * (ELEMS_PER_TASK / 257) + 2, 257)] {
            let x = Var::from_vec(
                values(rows * k).iter().map(|v| v * 4.0).collect(),
                (rows, k),
                &Device::Cpu,
            )
            .unwrap();
            let coef = Tensor::from_vec(
                values(rows * k).iter().rev().cloned().collect(),
                (rows, k),
                &Device::Cpu,
            )
            .unwrap();
            let ours = softmax_last_dim(x.as_tensor()).unwrap().unwrap();
            let theirs = candle_nn::ops::softmax(x.as_tensor(), candle_core::D::Minus1).unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-6, "values ({rows}x{k})");
            let go = (ours * &coef).unwrap().sum_all().unwrap().backward().unwrap();
            let gt = (theirs * &coef).unwrap().sum_all().unwrap().backward().unwrap();
            let d = max_diff(go.get(x.as_tensor()).unwrap(), gt.get(x.as_tensor()).unwrap());
            assert!(d < 1e-6, "gradient differs by {d} ({rows}x{k})");
        }
        // A transposed input is not the kernel's: the caller falls back to candle's ops.
        let m = Tensor::from_vec(values(12), (3, 4), &Device::Cpu).unwrap().t().unwrap();
        assert!(softmax_last_dim(&m).is_none());
    }

    #[test]
    fn masked_softmax_equals_the_softmax_of_the_masked_scores() {
        // Enough rows that the parallel chunks start mid-batch (the mask row lookup).
        let (b, heads, t, k) = (3, 4, ELEMS_PER_TASK / 64 + 5, 64);
        let n = b * heads * t * k;
        let x = Var::from_vec(
            values(n).iter().map(|v| v * 4.0).collect(),
            (b, heads, t, k),
            &Device::Cpu,
        )
        .unwrap();
        let coef = Tensor::from_vec(
            values(n).iter().rev().cloned().collect(),
            (b, heads, t, k),
            &Device::Cpu,
        )
        .unwrap();
        // A padding mask per key and a causal-like mask per (row, key), both [B, 1, ., K].
        let pad: Vec<f32> = (0..b * k).map(|i| if i % 7 == 3 { -10000.0 } else { 0.0 }).collect();
        let per_row: Vec<f32> =
            (0..b * t * k).map(|i| if (i % k) > (i / k) % t { -1e9 } else { 0.0 }).collect();
        for mask in [
            Tensor::from_vec(pad, (b, 1, 1, k), &Device::Cpu).unwrap(),
            Tensor::from_vec(per_row, (b, 1, t, k), &Device::Cpu).unwrap(),
        ] {
            let ours = masked_softmax(x.as_tensor(), &mask).unwrap().unwrap();
            let masked = x.as_tensor().broadcast_add(&mask).unwrap();
            let theirs = candle_nn::ops::softmax(&masked, candle_core::D::Minus1).unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-6, "values, mask {:?}", mask.dims());
            assert_eq!(ours.sorted_nodes().len(), 2, "only the input and the output are nodes");
            let go = (ours * &coef).unwrap().sum_all().unwrap().backward().unwrap();
            let gt = (theirs * &coef).unwrap().sum_all().unwrap().backward().unwrap();
            let d = max_diff(go.get(x.as_tensor()).unwrap(), gt.get(x.as_tensor()).unwrap());
            assert!(d < 1e-6, "gradient differs by {d}, mask {:?}", mask.dims());
            assert!(go.get(&mask).is_none(), "the constant mask got a gradient");
        }
    }
}
