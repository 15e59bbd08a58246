//! BLIP-2 stage-one model: frozen ViT, trainable `ln_vision`, query tokens, Q-Former and heads.
//!
//! References: LAVIS `blip2_qformer.py` (`Blip2Qformer.forward`, `extract_features`,
//! `compute_itm`), transformers 4.57 `Blip2ForImageTextRetrieval.forward`. The model returns
//! features; losses live in `objectives/`.
//!
//! A method ending in `_t` ("training-capable") takes the `train` flag and the RNG its dropout
//! draws from; the method of the same name without it runs in eval mode.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::heads::{LmHead, StageOneHeads};
use super::image_rows::ImageRows;
use super::qformer::{QFormer, QFormerInput, QFormerOutput, QueryKv};
use super::vision::VisionTransformer;
use crate::config::Blip2Config;
use crate::masks::{AdditiveMask, MaskMode, PaddingMask};
use crate::nn::LayerNorm;

/// Which optional parts a model has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelParts {
    /// The ViT (absent when the caller only ever feeds cached vision features).
    pub vision: bool,
    /// Text embeddings + text FFN (`use_qformer_text_input`).
    pub text: bool,
    /// `vision_projection`, `text_projection`, `itm_head`, `temp`.
    pub stage_one_heads: bool,
    /// `cls.predictions.*` (ITG).
    pub lm_head: bool,
}

impl ModelParts {
    /// Everything the config describes; the LM head is not in HF configs and is asked for separately.
    pub fn from_config(cfg: &Blip2Config, lm_head: bool) -> Self {
        let text = cfg.qformer_config.use_qformer_text_input;
        Self { vision: true, text, stage_one_heads: text, lm_head }
    }
}

/// Image input: raw pixels, or vision features cached from the frozen ViT.
#[derive(Debug, Clone, Copy)]
pub enum ImageInput<'a> {
    /// `[B, 3, H, W]`, normalized as by the BLIP image processor.
    Pixels(&'a Tensor),
    /// `[B, N, Dv]`: the frozen ViT's output BEFORE `ln_vision` (which is trainable and applied here).
    VisionFeatures(&'a Tensor),
}

#[derive(Debug, Clone)]
pub struct ImageFeatures {
    /// `[B, N, Dv]` after `ln_vision` (what the queries cross-attend).
    pub image_embeds: Tensor,
    /// `[B, Q, H]`
    pub query_output: Tensor,
    /// `[B, Q, E]`, unit norm (None without stage-one heads).
    pub image_feats: Option<Tensor>,
    /// Query self-attention K/V per layer, for ITG.
    pub query_kv: QueryKv,
}

#[derive(Debug, Clone)]
pub struct TextFeatures {
    /// `[B, L, H]`
    pub text_output: Tensor,
    /// `[B, E]` unit-norm projection of the first ([CLS]) position.
    pub text_feat: Tensor,
}

#[derive(Debug, Clone)]
pub struct Blip2Qformer {
    cfg: Blip2Config,
    vision: Option<VisionTransformer>,
    /// HF `vision_model.post_layernorm` = LAVIS `ln_vision`; trainable.
    ln_vision: LayerNorm,
    /// `[1, Q, H]`
    query_tokens: Tensor,
    qformer: QFormer,
    heads: Option<StageOneHeads>,
    lm_head: Option<LmHead>,
}

impl Blip2Qformer {
    /// `frozen` holds the ViT (`vision_model.*` without `post_layernorm`), `trainable` everything
    /// else, both rooted at the checkpoint root with canonical (HF) names. `ln_vision_eps` is
    /// 1e-6 for HF sources (config `layer_norm_eps`) and 1e-5 for LAVIS ones.
    pub fn new(
        cfg: &Blip2Config,
        parts: ModelParts,
        ln_vision_eps: f64,
        frozen: VarBuilder,
        trainable: VarBuilder,
    ) -> Result<Self> {
        if parts.text != cfg.qformer_config.use_qformer_text_input {
            candle_core::bail!(
                "model parts ask for text={} but use_qformer_text_input={}",
                parts.text,
                !parts.text
            )
        }
        let vision = if parts.vision {
            Some(VisionTransformer::new(&cfg.vision_config, frozen.pp("vision_model"))?)
        } else {
            None
        };
        let ln_vision = LayerNorm::new(
            cfg.vision_config.hidden_size,
            ln_vision_eps,
            trainable.pp("vision_model.post_layernorm"),
        )?;
        let query_tokens = trainable.get_with_hints(
            (1, cfg.num_query_tokens, cfg.qformer_config.hidden_size),
            "query_tokens",
            // LAVIS draws the queries from N(0, 0.02) (HF zeroes them).
            candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 },
        )?;
        let qformer = QFormer::new(&cfg.qformer_config, trainable.clone())?;
        let heads = if parts.stage_one_heads {
            Some(StageOneHeads::new(cfg, trainable.clone())?)
        } else {
            None
        };
        let lm_head = if parts.lm_head {
            let emb = qformer.embeddings().ok_or_else(|| {
                candle_core::Error::Msg(
                    "an LM head needs the Q-Former text embeddings (tied decoder)".into(),
                )
            })?;
            Some(LmHead::new(cfg, emb.word_embeddings().clone(), trainable.pp("cls.predictions"))?)
        } else {
            None
        };
        Ok(Self { cfg: cfg.clone(), vision, ln_vision, query_tokens, qformer, heads, lm_head })
    }

    pub fn config(&self) -> &Blip2Config {
        &self.cfg
    }
    pub fn qformer(&self) -> &QFormer {
        &self.qformer
    }
    pub fn vision(&self) -> Option<&VisionTransformer> {
        self.vision.as_ref()
    }
    pub fn ln_vision(&self) -> &LayerNorm {
        &self.ln_vision
    }
    pub fn heads(&self) -> Option<&StageOneHeads> {
        self.heads.as_ref()
    }
    pub fn lm_head(&self) -> Option<&LmHead> {
        self.lm_head.as_ref()
    }
    pub fn query_tokens(&self) -> &Tensor {
        &self.query_tokens
    }
    pub fn num_queries(&self) -> usize {
        self.cfg.num_query_tokens
    }

    fn require_heads(&self) -> Result<&StageOneHeads> {
        self.heads.as_ref().ok_or_else(|| {
            candle_core::Error::Msg(
                "model has no stage-one heads (vision/text projection, ITM)".into(),
            )
        })
    }

    /// Frozen ViT features, before `ln_vision` (cache these to skip the ViT later).
    // pixels: [B, 3, H, W] -> [B, N, Dv]
    pub fn vision_features(&self, pixels: &Tensor) -> Result<Tensor> {
        match &self.vision {
            Some(v) => v.forward(pixels),
            None => candle_core::bail!(
                "model was built without a vision encoder: pass cached vision features"
            ),
        }
    }

    /// `ln_vision` applied to ViT features (HF `last_hidden_state`).
    // image: pixels [B, 3, H, W] or features [B, N, Dv] -> [B, N, Dv]
    pub fn image_embeds(&self, image: ImageInput) -> Result<Tensor> {
        let features = match image {
            ImageInput::Pixels(p) => self.vision_features(p)?,
            ImageInput::VisionFeatures(f) => {
                let dv = f.dim(2)?;
                if dv != self.cfg.vision_config.hidden_size {
                    candle_core::bail!(
                        "cached vision features have width {dv}, the model expects {}",
                        self.cfg.vision_config.hidden_size
                    )
                }
                f.to_dtype(DType::F32)?
            }
        };
        candle_core::Module::forward(&self.ln_vision, &features)
    }

    /// Query tokens expanded to the batch.
    // -> [B, Q, H]
    pub fn expanded_queries(&self, batch: usize) -> Result<Tensor> {
        let (_, q, h) = self.query_tokens.dims3()?;
        self.query_tokens.broadcast_as((batch, q, h))
    }

    /// The query-only (ITC image) pass over given `image_embeds`.
    // image_embeds: [B, N, Dv] -> query output [B, Q, H] + query K/V
    pub fn query_pass(
        &self,
        image_embeds: &Tensor,
        train: bool,
        rng: &mut ChaCha8Rng,
    ) -> Result<QFormerOutput> {
        let b = image_embeds.dim(0)?;
        let queries = self.expanded_queries(b)?;
        let mask = AdditiveMask::new(
            MaskMode::UniModal,
            self.num_queries(),
            None,
            b,
            image_embeds.device(),
        )?;
        let inp = QFormerInput {
            query_embeds: Some(&queries),
            input_ids: None,
            self_mask: &mask,
            image_embeds: Some(image_embeds),
            past_query_kv: None,
            image_rows: None,
        };
        self.qformer.forward(&inp, train, rng)
    }

    /// Image -> query outputs and normalized image embeddings (HF `image_embeds` of the retrieval model).
    pub fn encode_image_t(
        &self,
        image: ImageInput,
        train: bool,
        rng: &mut ChaCha8Rng,
    ) -> Result<ImageFeatures> {
        let image_embeds = self.image_embeds(image)?;
        let out = self.query_pass(&image_embeds, train, rng)?;
        let query_output = out.query_output()?;
        let image_feats = match &self.heads {
            Some(h) => Some(h.image_feats(&query_output)?),
            None => None,
        };
        let query_kv = out
            .query_kv
            .ok_or_else(|| candle_core::Error::Msg("query pass returned no K/V".into()))?;
        Ok(ImageFeatures { image_embeds, query_output, image_feats, query_kv })
    }

    pub fn encode_image(&self, image: ImageInput) -> Result<ImageFeatures> {
        self.encode_image_t(image, false, &mut ChaCha8Rng::seed_from_u64(0))
    }

    /// Text-only (ITC text) pass -> normalized [CLS] embedding.
    // input_ids: [B, L] -> text_feat [B, E]
    pub fn encode_text_t(
        &self,
        input_ids: &Tensor,
        padding: &PaddingMask,
        train: bool,
        rng: &mut ChaCha8Rng,
    ) -> Result<TextFeatures> {
        let heads = self.require_heads()?;
        let b = input_ids.dim(0)?;
        let mask = AdditiveMask::new(MaskMode::UniModal, 0, Some(padding), b, input_ids.device())?;
        let inp = QFormerInput {
            query_embeds: None,
            input_ids: Some(input_ids),
            self_mask: &mask,
            image_embeds: None,
            past_query_kv: None,
            image_rows: None,
        };
        let out = self.qformer.forward(&inp, train, rng)?;
        let text_output = out.text_output()?;
        let text_feat = heads.text_feat(&text_output.narrow(1, 0, 1)?.squeeze(1)?)?;
        Ok(TextFeatures { text_output, text_feat })
    }

    pub fn encode_text(&self, input_ids: &Tensor, padding: &PaddingMask) -> Result<TextFeatures> {
        self.encode_text_t(input_ids, padding, false, &mut ChaCha8Rng::seed_from_u64(0))
    }

    /// ITM: one bidirectional pass over `[queries; text]`, head averaged over query positions.
    // image_embeds: [B, N, Dv] (after ln_vision), input_ids: [B, L] -> [B, 2]
    pub fn itm_logits_t(
        &self,
        image_embeds: &Tensor,
        input_ids: &Tensor,
        padding: &PaddingMask,
        train: bool,
        rng: &mut ChaCha8Rng,
    ) -> Result<Tensor> {
        self.itm_logits_shared(image_embeds, None, input_ids, padding, train, rng)
    }

    /// ITM where batch row b reads the image `image_rows` gives it: each distinct image's
    /// cross-attention keys/values are projected once however many texts it meets.
    // image_embeds: [U, N, Dv], image_rows: B rows over U images (None: U = B), input_ids: [B, L] -> [B, 2]
    pub fn itm_logits_shared(
        &self,
        image_embeds: &Tensor,
        image_rows: Option<&ImageRows>,
        input_ids: &Tensor,
        padding: &PaddingMask,
        train: bool,
        rng: &mut ChaCha8Rng,
    ) -> Result<Tensor> {
        let heads = self.require_heads()?;
        let b = input_ids.dim(0)?;
        let queries = self.expanded_queries(b)?;
        let mask = AdditiveMask::new(
            MaskMode::Bidirectional,
            self.num_queries(),
            Some(padding),
            b,
            input_ids.device(),
        )?;
        let inp = QFormerInput {
            query_embeds: Some(&queries),
            input_ids: Some(input_ids),
            self_mask: &mask,
            image_embeds: Some(image_embeds),
            past_query_kv: None,
            image_rows,
        };
        let out = self.qformer.forward(&inp, train, rng)?;
        heads.itm_logits(&out.query_output()?)
    }

    pub fn itm_logits(
        &self,
        image: ImageInput,
        input_ids: &Tensor,
        padding: &PaddingMask,
    ) -> Result<Tensor> {
        let image_embeds = self.image_embeds(image)?;
        self.itm_logits_t(
            &image_embeds,
            input_ids,
            padding,
            false,
            &mut ChaCha8Rng::seed_from_u64(0),
        )
    }

    /// ITG pass: text (starting with [DEC]) attends the cached query K/V and causally to itself;
    /// returns LM logits at every text position (unshifted).
    // decoder_input_ids: [B, L] -> [B, L, vocab]
    pub fn itg_logits_t(
        &self,
        query_kv: &QueryKv,
        decoder_input_ids: &Tensor,
        padding: &PaddingMask,
        train: bool,
        rng: &mut ChaCha8Rng,
    ) -> Result<Tensor> {
        let lm = self.lm_head.as_ref().ok_or_else(|| {
            candle_core::Error::Msg("model has no LM head (cls.predictions.*)".into())
        })?;
        let b = decoder_input_ids.dim(0)?;
        let q = query_kv.num_queries()?;
        let mask = AdditiveMask::new(
            MaskMode::MultimodalCausal,
            q,
            Some(padding),
            b,
            decoder_input_ids.device(),
        )?
        .text_rows()?;
        let inp = QFormerInput {
            query_embeds: None,
            input_ids: Some(decoder_input_ids),
            self_mask: &mask,
            image_embeds: None,
            past_query_kv: Some(query_kv),
            image_rows: None,
        };
        let out = self.qformer.forward(&inp, train, rng)?;
        lm.forward(&out.text_output()?)
    }
}

/// ITC similarity: for each (image, text) pair the max over queries of the query-feature /
/// text-feature dot product (cosine, both unit norm). HF `logits_per_image` (no temperature).
// image_feats: [Bi, Q, E], text_feat: [Bt, E] -> [Bi, Bt]
pub fn itc_similarity(image_feats: &Tensor, text_feat: &Tensor) -> Result<Tensor> {
    let (bi, q, e) = image_feats.dims3()?;
    let per_query = image_feats.reshape((bi * q, e))?.matmul(&text_feat.t()?)?;
    per_query.reshape((bi, q, ()))?.max(1)
}
