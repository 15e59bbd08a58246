//! Real (BLIP-2) and tiny sizes of the benchmark models, and the shared stage-one model builder.

use candle_core::{DType, Device, Tensor};
use rand::Rng;

use super::seeded::SeededVarMap;
use qformer::model::{Blip2Qformer, ModelParts};
use qformer::{Blip2Config, QFormerConfig, Result, VisionConfig};
use train::rng::substream;

/// Real BLIP-2 sizes, or every dimension shrunk so a workload runs in milliseconds (tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Real,
    Tiny,
}

impl Scale {
    /// Q-Former without the text path (OPT/T5 checkpoints); dropout 0 (the anchors use 0).
    pub fn qformer(self) -> QFormerConfig {
        let mut cfg = QFormerConfig {
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            ..QFormerConfig::default()
        };
        if self == Scale::Tiny {
            cfg.vocab_size = 120;
            cfg.hidden_size = 32;
            cfg.num_hidden_layers = 2;
            cfg.num_attention_heads = 4;
            cfg.intermediate_size = 64;
            cfg.max_position_embeddings = 32;
            cfg.encoder_hidden_size = 48;
        }
        cfg
    }

    pub fn vision(self) -> VisionConfig {
        match self {
            Scale::Real => VisionConfig::default(),
            Scale::Tiny => VisionConfig {
                hidden_size: 48,
                intermediate_size: 96,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                image_size: 28,
                ..VisionConfig::default()
            },
        }
    }

    /// Vision tokens per image (257 for ViT-g at 224 px).
    pub fn vision_tokens(self) -> usize {
        self.vision().num_positions()
    }

    pub fn pick(self, real: usize, tiny: usize) -> usize {
        match self {
            Scale::Real => real,
            Scale::Tiny => tiny,
        }
    }
}

/// Stage-one config: Q-Former with text input, vocabulary 30523 (bert-base-uncased + [DEC], as
/// LAVIS resizes it), 32 queries, 256-wide ITC space; dropout 0.
pub fn stage_one_config(scale: Scale) -> Blip2Config {
    Blip2Config {
        qformer_config: QFormerConfig {
            use_qformer_text_input: true,
            vocab_size: scale.pick(30523, 120),
            ..scale.qformer()
        },
        vision_config: scale.vision(),
        num_query_tokens: scale.pick(32, 4),
        image_text_hidden_size: scale.pick(256, 16),
        ..Blip2Config::default()
    }
}

/// A random stage-one model without the ViT (it is fed cached features); with the ITG LM head
/// when asked; `Var` weights when `trainable`, plain tensors otherwise. LAVIS `ln_vision`
/// epsilon (1e-5).
pub fn stage_one_model(
    scale: Scale,
    seed: u64,
    lm_head: bool,
    trainable: bool,
    device: &Device,
) -> Result<(SeededVarMap, Blip2Qformer)> {
    let cfg = stage_one_config(scale);
    let vars = if trainable { SeededVarMap::new(seed) } else { SeededVarMap::frozen(seed) };
    let vb = vars.var_builder(DType::F32, device);
    let parts = ModelParts { vision: false, text: true, stage_one_heads: true, lm_head };
    let model = Blip2Qformer::new(&cfg, parts, 1e-5, vb.clone(), vb)?;
    Ok((vars, model))
}

/// `[rows, len]` texts as the anchors tokenize them: `[CLS]=101`, ids uniform in
/// `[1000, 30522)`, `[SEP]=102`, no padding (tiny: 1, `[3, vocab - 1)`, 2).
pub fn text_ids(
    scale: Scale,
    seed: u64,
    rows: usize,
    len: usize,
    device: &Device,
) -> Result<Tensor> {
    let (cls, sep, lo, hi) = match scale {
        Scale::Real => (101u32, 102u32, 1000u32, 30522u32),
        Scale::Tiny => (1, 2, 3, 119),
    };
    let mut rng = substream(seed, "text_ids");
    let ids: Vec<u32> = (0..rows)
        .flat_map(|_| {
            let mid: Vec<u32> = (0..len - 2).map(|_| rng.random_range(lo..hi)).collect();
            std::iter::once(cls).chain(mid).chain(std::iter::once(sep))
        })
        .collect();
    Ok(Tensor::from_vec(ids, (rows, len), device)?)
}
