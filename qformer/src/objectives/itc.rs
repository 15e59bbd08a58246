//! Image-text contrastive loss (LAVIS `blip2_qformer.py` ITC block, single process).
//!
//! sim_i2t[b, j] = max_q <image_feats[b, q], text_feat[j]> / temp, and sim_t2i the same from
//! the text side; targets are the diagonal (pretraining) or same-image-id pairs (COCO
//! retrieval fine-tuning, LAVIS HEAD), smoothed with 0.1.

use candle_core::{Result, Tensor};

use super::cross_entropy::{cross_entropy, soft_cross_entropy, CeOpts};

/// ITC label smoothing in BLIP-2.
pub const ITC_LABEL_SMOOTHING: f64 = 0.1;

#[derive(Debug, Clone, Copy)]
pub enum ItcTargets<'a> {
    /// Text b is the positive of image b.
    Diagonal,
    /// Every pair with the same image id is positive (LAVIS HEAD `image_id` branch).
    ImageIds(&'a [i64]),
}

#[derive(Debug, Clone)]
pub struct ItcOutput {
    pub loss: Tensor,
    /// `[B, B]` image-to-text similarities divided by temp.
    pub sim_i2t: Tensor,
    /// `[B, B]` text-to-image similarities divided by temp.
    pub sim_t2i: Tensor,
}

/// Max over queries of the query/text dot products, without temperature.
// image_feats: [Bi, Q, E], text_feat: [Bt, E] -> (i2t [Bi, Bt], t2i [Bt, Bi])
pub fn max_query_similarities(
    image_feats: &Tensor,
    text_feat: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (bi, q, e) = image_feats.dims3()?;
    let flat = image_feats.reshape((bi * q, e))?;
    // LAVIS computes both directions separately (sim_q2t and sim_t2q); same values.
    let i2t = flat.matmul(&text_feat.t()?)?.reshape((bi, q, ()))?.max(1)?;
    let t2i = text_feat.matmul(&flat.t()?)?.reshape(((), bi, q))?.max(2)?;
    Ok((i2t, t2i))
}

// image_feats: [B, Q, E], text_feat: [B, E] (unit norm), temp: [] -> scalar loss
pub fn itc_loss(
    image_feats: &Tensor,
    text_feat: &Tensor,
    temp: &Tensor,
    targets: ItcTargets,
) -> Result<ItcOutput> {
    itc_loss_with(image_feats, text_feat, temp, targets, ItcGradient::GatheredDetached)
}

/// Which side of the similarity matrices carries gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItcGradient {
    /// LAVIS as it runs (a process group always exists): the "all" side comes from
    /// `concat_all_gather`, which is no-grad, so i2t trains only the image side and t2i only
    /// the text side.
    GatheredDetached,
    /// Plain autograd through both sides (LAVIS without any process group).
    Both,
}

// image_feats: [B, Q, E], text_feat: [B, E] (unit norm), temp: [] -> scalar loss
pub fn itc_loss_with(
    image_feats: &Tensor,
    text_feat: &Tensor,
    temp: &Tensor,
    targets: ItcTargets,
    gradient: ItcGradient,
) -> Result<ItcOutput> {
    let (i2t, t2i) = match gradient {
        ItcGradient::Both => max_query_similarities(image_feats, text_feat)?,
        ItcGradient::GatheredDetached => {
            let (i2t, _) = max_query_similarities(image_feats, &text_feat.detach())?;
            let (_, t2i) = max_query_similarities(&image_feats.detach(), text_feat)?;
            (i2t, t2i)
        }
    };
    let sim_i2t = i2t.broadcast_div(temp)?;
    let sim_t2i = t2i.broadcast_div(temp)?;
    let b = sim_i2t.dim(0)?;
    if sim_i2t.dim(1)? != b {
        candle_core::bail!(
            "ITC needs as many texts as images, got {b} images and {} texts",
            sim_i2t.dim(1)?
        )
    }
    let loss = match targets {
        ItcTargets::Diagonal => {
            let t: Vec<i64> = (0..b as i64).collect();
            let o = CeOpts { label_smoothing: ITC_LABEL_SMOOTHING };
            ((cross_entropy(&sim_i2t, &t, o)? + cross_entropy(&sim_t2i, &t, o)?)? / 2.0)?
        }
        ItcTargets::ImageIds(ids) => {
            if ids.len() != b {
                candle_core::bail!("{} image ids for a batch of {b}", ids.len())
            }
            // 0.9 * pos / rowsum(pos) + 0.1 / B, as LAVIS HEAD builds sim_targets.
            let mut w = vec![0f32; b * b];
            for i in 0..b {
                let n_pos = ids.iter().filter(|&&x| x == ids[i]).count() as f64;
                for j in 0..b {
                    let pos = if ids[i] == ids[j] { 1.0 } else { 0.0 };
                    w[i * b + j] = ((1.0 - ITC_LABEL_SMOOTHING) * pos / n_pos
                        + ITC_LABEL_SMOOTHING / b as f64) as f32;
                }
            }
            let targets = Tensor::from_vec(w, (b, b), sim_i2t.device())?;
            ((soft_cross_entropy(&sim_i2t, &targets)? + soft_cross_entropy(&sim_t2i, &targets)?)?
                / 2.0)?
        }
    };
    Ok(ItcOutput { loss, sim_i2t, sim_t2i })
}
