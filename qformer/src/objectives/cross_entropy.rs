//! Cross-entropy with PyTorch's `ignore_index` and `label_smoothing` semantics (candle-nn's
//! `cross_entropy` has neither), and with soft targets.

use candle_core::{DType, Result, Tensor, D};

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
    // Per-row weights over classes: the smoothed one-hot, zero for ignored rows.
    let mut w = vec![0f32; n * c];
    let mut counted = 0usize;
    for (row, &t) in targets.iter().enumerate() {
        if t == IGNORE_INDEX {
            continue;
        }
        if t < 0 || t as usize >= c {
            candle_core::bail!("cross_entropy: target {t} out of range for {c} classes (row {row})")
        }
        counted += 1;
        for k in 0..c {
            w[row * c + k] = (e / c as f64) as f32;
        }
        w[row * c + t as usize] += (1.0 - e) as f32;
    }
    if counted == 0 {
        candle_core::bail!("cross_entropy: every target is ignored")
    }
    let w = Tensor::from_vec(w, (n, c), logits.device())?.to_dtype(logits.dtype())?;
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    (logp * w)?.sum_all()?.neg()? / counted as f64
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
    let e = opts.label_smoothing;
    let mut w = vec![0f32; n * c];
    for (row, &t) in targets.iter().enumerate() {
        if t == IGNORE_INDEX || t < 0 || t as usize >= c {
            continue;
        }
        for k in 0..c {
            w[row * c + k] = (e / c as f64) as f32;
        }
        w[row * c + t as usize] += (1.0 - e) as f32;
    }
    let w = Tensor::from_vec(w, (n, c), logits.device())?.to_dtype(DType::F32)?;
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
}
