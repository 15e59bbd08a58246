//! Fused, multi-threaded CPU kernels. `layer_norm` records no backward, so callers take it only
//! when no input tracks a gradient (`!t.track_op()`): then nothing is lost. `gelu` carries its
//! own fused backward. Results equal the composite ops' to f32 rounding (tests below).

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// True when none of `ts` needs a gradient and all are contiguous f32 on the CPU.
pub(crate) fn fusable(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| !t.track_op() && cpu_f32(t))
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
        // ~64 KB of rows per task: enough work to amortize rayon, enough tasks to balance.
        let rows_per_task = (16384 / h).max(1);
        out.par_chunks_mut(h * rows_per_task).zip(x.par_chunks(h * rows_per_task)).for_each(
            |(out, x)| {
                for (o, row) in out.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
                    let mean = row.iter().sum::<f32>() / h as f32;
                    let var = row.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
                    let inv = 1.0 / (var + eps).sqrt();
                    for (((o, &v), &w), &b) in o.iter_mut().zip(row).zip(w).zip(b) {
                        *o = (v - mean) * inv * w + b;
                    }
                }
            },
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

// x: [..., H], weight/bias: [H] -> [..., H]
pub(crate) fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    x.apply_op3_no_bwd(weight, bias, &LayerNormOp { eps: eps as f32 })
}

/// Contiguous f32 on the CPU (what the hand-written kernels read).
fn cpu_f32(t: &Tensor) -> bool {
    t.dtype() == DType::F32 && matches!(t.device(), Device::Cpu) && t.is_contiguous()
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: expected a contiguous f32 tensor"),
    }
}

/// Elements per rayon task of the element-wise kernels.
const ELEMS_PER_TASK: usize = 1 << 14;

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
                *o = (candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2) + 1.0)
                    * 0.5
                    * v;
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
                    let cdf = 0.5
                        + 0.5 * candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2);
                    let pdf = INV_SQRT_2PI * (-0.5 * v * v).exp();
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
        // A Var input forces the composite path.
        let xv = Var::from_tensor(&x).unwrap();
        let slow = candle_core::Module::forward(&composite, xv.as_tensor()).unwrap();
        let d = (fused - slow).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        // Outputs reach |9| and the row sums ~8e4, so f32 summation order alone moves ~1e-5.
        let d = d.to_scalar::<f32>().unwrap();
        assert!(d < 1e-4, "fused LayerNorm differs by {d}");
    }
}
