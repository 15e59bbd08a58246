//! The image and text sides of a retrieval evaluation, each encoded once (LAVIS `compute_sim_matrix`'s
//! first two loops) and kept for both the ITC similarities and the ITM re-ranking.

use candle_core::{DType, Tensor};
use qformer::masks::PaddingMask;
use qformer::model::{Blip2Qformer, ImageInput};

use crate::error::{Error, Result};

/// Per-image outputs that depend only on the model and the image: what a cache stores.
#[derive(Debug, Clone)]
pub struct EncodedImages {
    /// `[B, N, Dv]`: frozen ViT output before `ln_vision`.
    pub vision_features: Tensor,
    /// `[B, Q, E]`: unit-norm projected query outputs.
    pub image_feats: Tensor,
}

/// Runs the ViT once and the query pass on its features.
// pixels: [B, 3, H, W] -> vision_features [B, N, Dv], image_feats [B, Q, E]
pub fn encode_images(model: &Blip2Qformer, pixels: &Tensor) -> Result<EncodedImages> {
    let vision_features = model.vision_features(pixels)?;
    let feats = model.encode_image(ImageInput::VisionFeatures(&vision_features))?;
    let image_feats = feats.image_feats.ok_or_else(|| {
        Error::Invalid("the model has no vision projection (stage-one heads) for ITC".into())
    })?;
    Ok(EncodedImages { vision_features, image_feats })
}

/// All images of the gallery, in annotation order.
#[derive(Debug, Clone)]
pub struct ImageGallery {
    /// `[N_img, Q, E]`, unit norm.
    pub image_feats: Tensor,
    /// `[N_img, N, Dv]` after `ln_vision`: what ITM cross-attends, computed once (LAVIS `vit_feats`).
    pub image_embeds: Tensor,
}

impl ImageGallery {
    /// From per-image (or per-batch) encodings, concatenated along the batch axis.
    pub fn from_encoded(model: &Blip2Qformer, parts: &[EncodedImages]) -> Result<Self> {
        if parts.is_empty() {
            return Err(Error::Invalid("the image gallery is empty".into()));
        }
        let feats: Vec<&Tensor> = parts.iter().map(|p| &p.image_feats).collect();
        let embeds = parts
            .iter()
            .map(|p| model.image_embeds(ImageInput::VisionFeatures(&p.vision_features)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { image_feats: Tensor::cat(&feats, 0)?, image_embeds: Tensor::cat(&embeds, 0)? })
    }

    pub fn len(&self) -> usize {
        self.image_feats.dims().first().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// All texts, tokenized (padded to one length, LAVIS uses `max_length` 35) and encoded.
#[derive(Debug, Clone)]
pub struct TextGallery {
    /// `[N_txt, L]` u32
    pub input_ids: Tensor,
    pub padding: PaddingMask,
    /// Position after the last real token of every text, to trim padding off ITM batches.
    pub lengths: Vec<usize>,
    /// `[N_txt, E]`, unit norm.
    pub text_feat: Tensor,
}

impl TextGallery {
    /// Encodes `input_ids [N_txt, L]` in batches of `batch_size`.
    pub fn encode(
        model: &Blip2Qformer,
        input_ids: Tensor,
        padding: PaddingMask,
        batch_size: usize,
    ) -> Result<Self> {
        let (n, l) = input_ids.dims2()?;
        if n == 0 || padding.batch_size() != n || padding.len() != l {
            return Err(Error::Invalid(format!(
                "text gallery: {n} texts of length {l} but a padding mask of {}x{}",
                padding.batch_size(),
                padding.len()
            )));
        }
        let batch_size = batch_size.max(1);
        let mut feats = Vec::new();
        for start in (0..n).step_by(batch_size) {
            let len = batch_size.min(n - start);
            let rows: Vec<usize> = (start..start + len).collect();
            let ids = input_ids.narrow(0, start, len)?;
            feats.push(model.encode_text(&ids, &padding.select_rows(&rows))?.text_feat);
        }
        let lengths = (0..n)
            .map(|t| (0..l).rev().find(|&j| padding.keep(t, j)).map_or(0, |j| j + 1))
            .collect();
        Ok(Self {
            input_ids: input_ids.to_dtype(DType::U32)?,
            padding,
            lengths,
            text_feat: Tensor::cat(&feats, 0)?,
        })
    }

    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }
}
