//! Stage-two language-modelling losses: cross-entropy with ignored (-100) labels, OPT's shifted
//! causal LM loss and the FLAN-T5 prefix-LM split.

use candle_core::{DType, Result, Tensor, D};
use rand::Rng;

/// Label value that takes no part in the loss (PyTorch `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Log-softmax over the last dim; the max is detached (it cancels, and a tie would otherwise
/// spread gradient to every tied element).
// x: [..., V] -> [..., V]
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let diff = x.broadcast_sub(&max)?;
    diff.broadcast_sub(&diff.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

/// Mean cross-entropy over the rows whose label is not `IGNORE_INDEX` (PyTorch
/// `F.cross_entropy(ignore_index=-100, reduction="mean")`). Computed in f32 (f64 stays f64).
// logits: [N, V], labels: N -> scalar
pub fn cross_entropy_ignore(logits: &Tensor, labels: &[i64]) -> Result<Tensor> {
    let (n, v) = logits.dims2()?;
    if labels.len() != n {
        candle_core::bail!("cross_entropy: {} labels for {n} logit rows", labels.len());
    }
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        if l == IGNORE_INDEX {
            continue;
        }
        if l < 0 || l as usize >= v {
            candle_core::bail!(
                "cross_entropy: label {l} at row {i} is outside the vocabulary of {v}"
            );
        }
        rows.push(i as u32);
        targets.push(l as u32);
    }
    if rows.is_empty() {
        // PyTorch returns NaN here (0/0); a batch without targets is a caller error.
        candle_core::bail!("cross_entropy: every label is ignored");
    }
    let dev = logits.device();
    let count = rows.len();
    let rows = Tensor::from_vec(rows, count, dev)?;
    let targets = Tensor::from_vec(targets, (count, 1), dev)?;
    let logits =
        if logits.dtype() == DType::F64 { logits.clone() } else { logits.to_dtype(DType::F32)? };
    let lp = log_softmax(&logits.index_select(&rows, 0)?)?;
    let picked = lp.gather(&targets, 1)?;
    picked.sum_all()?.neg()? / count as f64
}

/// HF causal-LM loss: position t predicts label t+1.
// logits: [B, L, V], labels: B rows of L -> scalar
pub fn causal_lm_loss(logits: &Tensor, labels: &[Vec<i64>]) -> Result<Tensor> {
    let (b, l, v) = logits.dims3()?;
    if labels.len() != b || labels.iter().any(|r| r.len() != l) {
        candle_core::bail!("causal_lm_loss: labels must be [{b}, {l}] like the logits");
    }
    if l < 2 {
        candle_core::bail!("causal_lm_loss: need at least two positions");
    }
    let shifted: Vec<i64> = labels.iter().flat_map(|r| r[1..].iter().copied()).collect();
    let logits = logits.narrow(1, 0, l - 1)?.reshape((b * (l - 1), v))?;
    cross_entropy_ignore(&logits, &shifted)
}

/// Sequence-to-sequence loss (T5): position t predicts label t (the decoder input is shifted).
// logits: [B, T, V], labels: B rows of T -> scalar
pub fn seq2seq_loss(logits: &Tensor, labels: &[Vec<i64>]) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    if labels.len() != b || labels.iter().any(|r| r.len() != t) {
        candle_core::bail!("seq2seq_loss: labels must be [{b}, {t}] like the logits");
    }
    let flat: Vec<i64> = labels.iter().flatten().copied().collect();
    cross_entropy_ignore(&logits.reshape((b * t, v))?, &flat)
}

/// Split a caption's tokens for FLAN-T5 prefix-LM pretraining (LAVIS#139): a split point drawn
/// uniformly from 1..=max(1, len/2); the prefix joins the queries in the encoder, the suffix is the
/// decoder target. Captions of fewer than two tokens keep everything as the target.
pub fn prefix_lm_split<R: Rng>(tokens: &[u32], rng: &mut R) -> (Vec<u32>, Vec<u32>) {
    if tokens.len() < 2 {
        return (Vec::new(), tokens.to_vec());
    }
    let hi = (tokens.len() / 2).max(1);
    let k = rng.random_range(1..=hi);
    (tokens[..k].to_vec(), tokens[k..].to_vec())
}
