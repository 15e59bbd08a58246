//! Image-grounded text generation loss (LAVIS `blip2_qformer.py` ITG block,
//! `Qformer.py::BertLMHeadModel.forward`).
//!
//! The decoder input is the text with [CLS] replaced by [DEC]; targets are the same ids with
//! padding ignored, shifted by one; cross-entropy with label smoothing 0.1 averaged over the
//! counted targets. The text attends the image pass's query K/V (not detached).

use candle_core::{DType, Result, Tensor};

use super::cross_entropy::{cross_entropy, CeOpts, IGNORE_INDEX};

/// ITG label smoothing in BLIP-2.
pub const ITG_LABEL_SMOOTHING: f64 = 0.1;

#[derive(Debug, Clone)]
pub struct ItgInputs {
    /// `[B, L]` text ids with position 0 set to the bos ([DEC]) id.
    pub decoder_input_ids: Tensor,
    /// `[B, L]` targets before shifting: ids, with padding set to -100.
    pub labels: Vec<Vec<i64>>,
}

/// Builds the ITG decoder inputs and labels from tokenized text ([CLS] ... [SEP] [PAD]...).
// input_ids: [B, L] -> decoder ids [B, L], labels B x L
pub fn itg_inputs(input_ids: &Tensor, bos_token_id: u32, pad_token_id: u32) -> Result<ItgInputs> {
    let ids: Vec<Vec<u32>> = input_ids.to_dtype(DType::U32)?.to_vec2()?;
    let dec: Vec<Vec<u32>> = ids
        .iter()
        .map(|row| {
            row.iter().enumerate().map(|(j, &t)| if j == 0 { bos_token_id } else { t }).collect()
        })
        .collect();
    // LAVIS masks pad ids of the decoder input (so [DEC] at position 0 stays, but is shifted out).
    let labels = dec
        .iter()
        .map(|row| {
            row.iter().map(|&t| if t == pad_token_id { IGNORE_INDEX } else { t as i64 }).collect()
        })
        .collect();
    let (b, l) = input_ids.dims2()?;
    let flat: Vec<u32> = dec.into_iter().flatten().collect();
    let decoder_input_ids = Tensor::from_vec(flat, (b, l), input_ids.device())?;
    Ok(ItgInputs { decoder_input_ids, labels })
}

/// Next-token loss: logits at position i predict label i+1.
// logits: [B, L, V] -> scalar
pub fn itg_loss(logits: &Tensor, labels: &[Vec<i64>], label_smoothing: f64) -> Result<Tensor> {
    let (b, l, v) = logits.dims3()?;
    if labels.len() != b || labels.iter().any(|r| r.len() != l) {
        candle_core::bail!("ITG labels do not match logits [{b}, {l}, {v}]")
    }
    let shifted = logits.narrow(1, 0, l - 1)?.reshape((b * (l - 1), v))?;
    let targets: Vec<i64> = labels.iter().flat_map(|r| r[1..].iter().copied()).collect();
    cross_entropy(&shifted, &targets, CeOpts { label_smoothing })
}
