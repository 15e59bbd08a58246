//! Cross-entropy with PyTorch's `ignore_index` and `label_smoothing` semantics (candle-nn's
//! `cross_entropy` has neither), and with soft targets.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::nn::fast_math;

/// Target value that contributes no loss (PyTorch/HF `-100`).
pub const IGNORE_INDEX: i64 = -100;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CeOpts {
    pub label_smoothing: f64,
}

impl Default for CeOpts {
    fn default() -> Self {
        Self { label_smoothing: 0.0 }
    }
}

/// Mean over non-ignored rows of `-(1-e) log p[t] - e/C sum_c log p[c]`, exactly
/// `F.cross_entropy(logits, targets, ignore_index=-100, label_smoothing=e)`.
// logits: [N, C], targets: N class ids (or IGNORE_INDEX) -> scalar
pub fn cross_entropy(logits: &Tensor, targets: &[i64], opts: CeOpts) -> Result<Tensor> {
    let (n, c) = logits.dims2()?;
    if targets.len() != n {
        candle_core::bail!("cross_entropy: {} targets for {n} rows", targets.len())
    }
    let e = opts.label_smoothing;
    let mut counted = 0usize;
    for (row, &t) in targets.iter().enumerate() {
        if t == IGNORE_INDEX {
            continue;
        }
        if t < 0 || t as usize >= c {
            candle_core::bail!("cross_entropy: target {t} out of range for {c} classes (row {row})")
        }
        counted += 1;
    }
    if counted == 0 {
        candle_core::bail!("cross_entropy: every target is ignored")
    }
    if logits.dtype() == DType::F32 && matches!(logits.device(), Device::Cpu) {
        let op = SmoothedCrossEntropy { targets: targets.to_vec(), smoothing: e, counted };
        return logits.contiguous()?.apply_op1(op);
    }
    let w = smoothed_one_hot(targets, c, e, logits.device())?.to_dtype(logits.dtype())?;
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    (logp * w)?.sum_all()?.neg()? / counted as f64
}

/// `[N, C]` per-row class weights: the smoothed one-hot `(1-e)·[c = t] + e/C`, zero for ignored
/// rows and for targets out of range (`cross_entropy` rejects those before).
fn smoothed_one_hot(targets: &[i64], c: usize, e: f64, device: &Device) -> Result<Tensor> {
    let mut w = vec![0f32; targets.len() * c];
    for (row, &t) in targets.iter().enumerate() {
        if t == IGNORE_INDEX || t < 0 || t as usize >= c {
            continue;
        }
        w[row * c..(row + 1) * c].iter_mut().for_each(|w| *w = (e / c as f64) as f32);
        w[row * c + t as usize] += (1.0 - e) as f32;
    }
    Tensor::from_vec(w, (targets.len(), c), device)
}

/// [`cross_entropy`] as one CPU op whose backward recomputes the softmax from the logits.
///
/// The composite (log-softmax, a `[N, C]` target weight, their product) keeps about seven
/// `[N, C]` tensors alive in candle's graph: at the ITG head's `[248, 30523]` that is 150 MB of a
/// stage-one step; this op keeps none beyond the logits. Row terms in f64:
/// `loss_row = lse - (1-e)·x_t - e/C·Σ_c x_c`, and `∂/∂x_c = softmax_c - (1-e)·[c = t] - e/C`.
struct SmoothedCrossEntropy {
    targets: Vec<i64>,
    smoothing: f64,
    counted: usize,
}

impl SmoothedCrossEntropy {
    /// `(max, log Σ exp(x - max))` of one row.
    fn log_sum_exp(row: &[f32]) -> (f32, f64) {
        let max = fast_math::max(row);
        (max, fast_math::sum_exp_shifted_f64(row, max).ln())
    }

    fn rows<'a>(&self, s: &'a CpuStorage, l: &Layout) -> Result<(&'a [f32], usize)> {
        let (n, c) = l.shape().dims2()?;
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) if n == self.targets.len() => Ok((&v[a..b], c)),
            _ => candle_core::bail!("cross_entropy: expected contiguous f32 logits [N, C]"),
        }
    }
}

impl CustomOp1 for SmoothedCrossEntropy {
    fn name(&self) -> &'static str {
        "qformer-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, c) = self.rows(s, l)?;
        let e = self.smoothing;
        let total: f64 = x
            .par_chunks(c)
            .zip(self.targets.par_iter())
            .filter(|(_, &t)| t != IGNORE_INDEX)
            .map(|(row, &t)| {
                let (max, lse) = Self::log_sum_exp(row);
                let lse = lse + max as f64;
                let sum = fast_math::sum_f64(row);
                lse - (1.0 - e) * row[t as usize] as f64 - e / c as f64 * sum
            })
            .sum();
        Ok((CpuStorage::F32(vec![(total / self.counted as f64) as f32]), Shape::from(())))
    }

    fn bwd(&self, logits: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad.to_dtype(DType::F64)?.to_scalar::<f64>()? / self.counted as f64;
        let (n, c) = logits.dims2()?;
        let (storage, layout) = logits.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("cross_entropy: CPU logits expected")
        };
        let (x, _) = self.rows(cpu, layout)?;
        let e = self.smoothing;
        let mut dx = vec![0f32; n * c];
        dx.par_chunks_mut(c).zip(x.par_chunks(c)).zip(self.targets.par_iter()).for_each(
            |((d, row), &t)| {
                if t == IGNORE_INDEX {
                    return;
                }
                let (max, lse) = Self::log_sum_exp(row);
                // softmax_c = e^(x_c - (max + lse)); max + lse rounded to f32 once per row.
                let shift = max + lse as f32;
                let (uniform, g32) = ((e / c as f64) as f32, g as f32);
                for (d, &v) in d.iter_mut().zip(row) {
                    *d = (fast_math::exp(v - shift) - uniform) * g32;
                }
                d[t as usize] -= ((1.0 - e) * g) as f32;
            },
        );
        drop(storage);
        Ok(Some(Tensor::from_vec(dx, (n, c), logits.device())?))
    }
}

/// Mean over rows of `-sum_c target[c] log p[c]` for given target distributions.
// logits: [N, C], targets: [N, C] (rows sum to 1) -> scalar
pub fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let n = logits.dim(0)?;
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    (logp * targets.to_dtype(logits.dtype())?)?.sum_all()?.neg()? / n as f64
}

/// Per-token losses (0 where ignored), for inspection: `[N]`.
// logits: [N, C] -> [N]
pub fn cross_entropy_per_row(logits: &Tensor, targets: &[i64], opts: CeOpts) -> Result<Tensor> {
    let (n, c) = logits.dims2()?;
    if targets.len() != n {
        candle_core::bail!("cross_entropy_per_row: {} targets for {n} rows", targets.len())
    }
    let w = smoothed_one_hot(targets, c, opts.label_smoothing, logits.device())?;
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    (logp * w)?.sum(1)?.neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    // Reference: torch.nn.functional.cross_entropy(torch.tensor([[1.,2.,0.5],[0.,-1.,3.],[2.,2.,2.]]),
    //   torch.tensor([1,-100,0]), label_smoothing=s) for s in (0, 0.1), written out by hand below.
    #[test]
    fn matches_pytorch_with_ignore_and_smoothing() {
        let logits =
            Tensor::new(&[[1f32, 2., 0.5], [0., -1., 3.], [2., 2., 2.]], &Device::Cpu).unwrap();
        let t = [1i64, IGNORE_INDEX, 0];
        // Hand computation: row0 logp = x - logsumexp(1,2,.5) = x - 2.4640657; row2 logp = -ln 3.
        let lse0 = (1f64.exp() + 2f64.exp() + 0.5f64.exp()).ln();
        let lp0 = [1.0 - lse0, 2.0 - lse0, 0.5 - lse0];
        let lp2 = -(3f64.ln());
        let plain = (-lp0[1] - lp2) / 2.0;
        let smooth_row0 = -0.9 * lp0[1] - 0.1 / 3.0 * lp0.iter().sum::<f64>();
        let smooth_row2 = -0.9 * lp2 - 0.1 * lp2;
        let smooth = (smooth_row0 + smooth_row2) / 2.0;
        let got =
            cross_entropy(&logits, &t, CeOpts::default()).unwrap().to_scalar::<f32>().unwrap();
        assert!((got as f64 - plain).abs() < 1e-6, "{got} vs {plain}");
        let got = cross_entropy(&logits, &t, CeOpts { label_smoothing: 0.1 })
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((got as f64 - smooth).abs() < 1e-6, "{got} vs {smooth}");
        // PyTorch 2.9.1 printed 0.7814905643463135 and 0.8231571912765503 for the two calls.
        assert!((plain - 0.781_490_56).abs() < 1e-6 && (smooth - 0.823_157_19).abs() < 1e-6);
        assert!(cross_entropy(&logits, &[IGNORE_INDEX; 3], CeOpts::default()).is_err());
        assert!(cross_entropy(&logits, &[3, 0, 0], CeOpts::default()).is_err());
    }

    #[test]
    fn soft_targets_equal_hard_ones_when_one_hot() {
        let logits = Tensor::new(&[[1f32, 2., 0.5], [0., -1., 3.]], &Device::Cpu).unwrap();
        let hard =
            cross_entropy(&logits, &[1, 2], CeOpts::default()).unwrap().to_scalar::<f32>().unwrap();
        let soft_t = Tensor::new(&[[0f32, 1., 0.], [0., 0., 1.]], &Device::Cpu).unwrap();
        let soft = soft_cross_entropy(&logits, &soft_t).unwrap().to_scalar::<f32>().unwrap();
        assert!((hard - soft).abs() < 1e-6);
    }

    #[test]
    fn the_fused_op_equals_the_composite_in_value_and_gradient() {
        let (n, c) = (5, 7);
        let v: Vec<f32> = (0..n * c).map(|i| ((i as f32) * 0.73).sin() * 3.0).collect();
        let x = candle_core::Var::from_vec(v, (n, c), &Device::Cpu).unwrap();
        let t = [3i64, IGNORE_INDEX, 0, 6, 2];
        for e in [0.0, 0.1] {
            let fused = cross_entropy(x.as_tensor(), &t, CeOpts { label_smoothing: e }).unwrap();
            // The composite, as for non-CPU devices.
            let mut w = vec![0f32; n * c];
            for (row, &t) in t.iter().enumerate().filter(|(_, &t)| t != IGNORE_INDEX) {
                w[row * c..(row + 1) * c].iter_mut().for_each(|w| *w = (e / c as f64) as f32);
                w[row * c + t as usize] += (1.0 - e) as f32;
            }
            let w = Tensor::from_vec(w, (n, c), &Device::Cpu).unwrap();
            let logp = candle_nn::ops::log_softmax(x.as_tensor(), D::Minus1).unwrap();
            let composite = ((logp * w).unwrap().sum_all().unwrap().neg().unwrap() / 4.0).unwrap();
            let (a, b) = (fused.to_scalar::<f32>().unwrap(), composite.to_scalar::<f32>().unwrap());
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            let ga = (fused * 1.7).unwrap().backward().unwrap();
            let gb = (composite * 1.7).unwrap().backward().unwrap();
            let d = (ga.get(x.as_tensor()).unwrap() - gb.get(x.as_tensor()).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-6, "gradient differs by {d} at smoothing {e}");
        }
    }
}
