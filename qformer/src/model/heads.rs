//! Stage-one heads: contrastive projections, ITM classifier, temperature and the ITG LM head.
//!
//! References: LAVIS `blip2_qformer.py` (`vision_proj`, `text_proj`, `itm_head`, `temp`),
//! `Qformer.py` (`BertOnlyMLMHead`: transform dense -> GELU -> LayerNorm, decoder tied to the
//! word embeddings plus its own bias); HF `Blip2ForImageTextRetrieval` (`vision_projection`,
//! `text_projection`, `itm_head`, no `temp`).

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::config::Blip2Config;
use crate::nn::{gelu, LayerNorm, Linear};

/// LAVIS's initial temperature; also used when a checkpoint (HF retrieval) has none.
pub const DEFAULT_TEMP: f64 = 0.07;

/// Divides x by its L2 norm over the last dim, like `F.normalize(x, dim=-1)` (eps 1e-12).
// x: [..., E] -> [..., E]
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

#[derive(Debug, Clone)]
pub struct StageOneHeads {
    pub vision_proj: Linear,
    pub text_proj: Linear,
    pub itm_head: Linear,
    /// Scalar; divides the ITC similarities (never clamped in BLIP-2).
    pub temp: Tensor,
}

impl StageOneHeads {
    /// `vb` is the checkpoint root (`vision_projection.*`, `text_projection.*`, `itm_head.*`, `temp`).
    pub fn new(cfg: &Blip2Config, vb: VarBuilder) -> Result<Self> {
        let h = cfg.qformer_config.hidden_size;
        let e = cfg.image_text_hidden_size;
        Ok(Self {
            vision_proj: crate::nn::linear(h, e, true, vb.pp("vision_projection"))?,
            text_proj: crate::nn::linear(h, e, true, vb.pp("text_projection"))?,
            itm_head: crate::nn::linear(h, 2, true, vb.pp("itm_head"))?,
            temp: vb.get_with_hints((), "temp", candle_nn::Init::Const(DEFAULT_TEMP))?,
        })
    }

    // query_output: [B, Q, H] -> [B, Q, E], unit norm
    pub fn image_feats(&self, query_output: &Tensor) -> Result<Tensor> {
        l2_normalize(&self.vision_proj.forward(query_output)?)
    }

    // text_cls: [B, H] -> [B, E], unit norm
    pub fn text_feat(&self, text_cls: &Tensor) -> Result<Tensor> {
        l2_normalize(&self.text_proj.forward(text_cls)?)
    }

    // query_output: [B, Q, H] -> [B, 2], the head averaged over query positions
    pub fn itm_logits(&self, query_output: &Tensor) -> Result<Tensor> {
        self.itm_head.forward(query_output)?.mean(1)
    }
}

/// BERT MLM head of the Q-Former (`cls.predictions.*`), used by ITG.
#[derive(Debug, Clone)]
pub struct LmHead {
    dense: Linear,
    layer_norm: LayerNorm,
    /// `[vocab, H]`, the Q-Former word embeddings (tied).
    decoder_weight: Tensor,
    bias: Tensor,
}

impl LmHead {
    /// `vb` points at `cls.predictions`; `word_embeddings` is the tied decoder weight.
    pub fn new(cfg: &Blip2Config, word_embeddings: Tensor, vb: VarBuilder) -> Result<Self> {
        let q = &cfg.qformer_config;
        let h = q.hidden_size;
        let dense = crate::nn::linear(h, h, true, vb.pp("transform.dense"))?;
        let layer_norm = LayerNorm::new(h, q.layer_norm_eps, vb.pp("transform.LayerNorm"))?;
        let bias = vb.get_with_hints(q.vocab_size, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { dense, layer_norm, decoder_weight: word_embeddings, bias })
    }

    // hidden: [B, L, H] -> [B, L, vocab]
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        let x = self.layer_norm.forward(&gelu(&self.dense.forward(hidden)?)?)?;
        // Tied to the word embeddings: the same product as a linear layer's.
        Linear::new(self.decoder_weight.clone(), Some(self.bias.clone())).forward(&x)
    }
}
