//! The three stage-one losses on one batch, in LAVIS order (`Blip2Qformer.forward`, single
//! process): image pass (queries, keeping their K/V), text pass, ITC, ITM with negatives from the
//! ITC similarities, ITG over the cached query K/V. Total = itc + itm + itg.

use candle_core::{Result, Tensor};
use rand_chacha::ChaCha8Rng;

use super::itc::{itc_loss_with, ItcGradient, ItcOutput, ItcTargets};
use super::itg::{itg_inputs, itg_loss, ITG_LABEL_SMOOTHING};
use super::itm::{itm_loss, select_negatives, NegativeMode, SelectedNegatives};
use crate::masks::PaddingMask;
use crate::model::{Blip2Qformer, ImageInput, ImageRows};

#[derive(Debug, Clone)]
pub struct ObjectiveConfig {
    pub negatives: NegativeMode,
    /// `[DEC]` id (30522 with bert-base-uncased + [DEC]).
    pub bos_token_id: u32,
    pub pad_token_id: u32,
    pub itg_label_smoothing: f64,
    pub itc_gradient: ItcGradient,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        Self {
            negatives: NegativeMode::Sample,
            bos_token_id: 30522,
            pad_token_id: 0,
            itg_label_smoothing: ITG_LABEL_SMOOTHING,
            itc_gradient: ItcGradient::GatheredDetached,
        }
    }
}

/// Tensor-only input of one stage-one step.
#[derive(Debug, Clone, Copy)]
pub struct PretrainBatch<'a> {
    pub image: ImageInput<'a>,
    /// `[B, L]` [CLS] ... [SEP] [PAD]...
    pub input_ids: &'a Tensor,
    pub attention_mask: &'a PaddingMask,
    /// Image ids for ITC/ITM positives (COCO retrieval fine-tuning); `None` = diagonal.
    pub image_ids: Option<&'a [i64]>,
}

#[derive(Debug, Clone)]
pub struct PretrainLosses {
    pub itc: Tensor,
    pub itm: Tensor,
    pub itg: Tensor,
    pub total: Tensor,
    pub itc_out: ItcOutput,
    pub negatives: SelectedNegatives,
    /// `[3B, 2]`
    pub itm_logits: Tensor,
    /// `[B, L, vocab]` unshifted.
    pub itg_logits: Tensor,
}

pub fn stage_one_losses(
    model: &Blip2Qformer,
    batch: &PretrainBatch,
    cfg: &ObjectiveConfig,
    train: bool,
    rng: &mut ChaCha8Rng,
) -> Result<PretrainLosses> {
    let heads = model.heads().ok_or_else(|| {
        candle_core::Error::Msg("stage-one losses need the stage-one heads".into())
    })?;
    let image_embeds = model.image_embeds(batch.image)?;
    let img = model.query_pass(&image_embeds, train, rng)?;
    let query_kv = img
        .query_kv
        .clone()
        .ok_or_else(|| candle_core::Error::Msg("query pass returned no K/V".into()))?;
    let image_feats = heads.image_feats(&img.query_output()?)?;
    let text = model.encode_text_t(batch.input_ids, batch.attention_mask, train, rng)?;

    let targets = match batch.image_ids {
        Some(ids) => ItcTargets::ImageIds(ids),
        None => ItcTargets::Diagonal,
    };
    let itc_out =
        itc_loss_with(&image_feats, &text.text_feat, &heads.temp, targets, cfg.itc_gradient)?;

    let negatives =
        select_negatives(&itc_out.sim_i2t, &itc_out.sim_t2i, batch.image_ids, cfg.negatives, rng)?;
    let dev = batch.input_ids.device();
    let image_rows =
        ImageRows::new(&negatives.image_rows(), image_embeds.dim(0)?, image_embeds.device())?;
    let text_rows = Tensor::new(negatives.text_rows().as_slice(), dev)?;
    let text_rows_idx: Vec<usize> = negatives.text_rows().iter().map(|&i| i as usize).collect();
    let itm_ids = batch.input_ids.index_select(&text_rows, 0)?;
    let itm_mask = batch.attention_mask.select_rows(&text_rows_idx);
    // The 3B rows read the B images: each image's cross-attention K/V is projected once.
    let itm_logits = model.itm_logits_shared(
        &image_embeds,
        Some(&image_rows),
        &itm_ids,
        &itm_mask,
        train,
        rng,
    )?;
    let itm = itm_loss(&itm_logits, &negatives)?;

    let itg_in = itg_inputs(batch.input_ids, cfg.bos_token_id, cfg.pad_token_id)?;
    let itg_logits = model.itg_logits_t(
        &query_kv,
        &itg_in.decoder_input_ids,
        batch.attention_mask,
        train,
        rng,
    )?;
    let itg = itg_loss(&itg_logits, &itg_in.labels, cfg.itg_label_smoothing)?;

    let total = ((&itc_out.loss + &itm)? + &itg)?;
    Ok(PretrainLosses {
        itc: itc_out.loss.clone(),
        itm,
        itg,
        total,
        itc_out,
        negatives,
        itm_logits,
        itg_logits,
    })
}
