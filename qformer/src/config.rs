//! BLIP-2 configuration, deserialized from an HF Hub `config.json` as it lies.
//!
//! Field names follow transformers' `Blip2Config` / `Blip2VisionConfig` / `Blip2QFormerConfig`;
//! missing fields take the HF defaults (which are the BLIP-2 ViT-g / BERT-base values).
//! `text_config` belongs to the LLM bridges and is kept raw.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// EVA ViT-g/14 as HF `Blip2VisionConfig` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub attention_dropout: f64,
    pub qkv_bias: bool,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 1408,
            intermediate_size: 6144,
            num_hidden_layers: 39,
            num_attention_heads: 16,
            image_size: 224,
            patch_size: 14,
            num_channels: 3,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-6,
            attention_dropout: 0.0,
            qkv_bias: true,
        }
    }
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
    /// Tokens out of the ViT: class token plus patches.
    pub fn num_positions(&self) -> usize {
        self.num_patches() + 1
    }
}

/// BERT-base plus the BLIP-2 additions, as HF `Blip2QFormerConfig` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QFormerConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: usize,
    pub position_embedding_type: String,
    pub cross_attention_frequency: usize,
    pub encoder_hidden_size: usize,
    /// True for stage-one models (text embeddings and text FFN present); false for
    /// `Blip2ForConditionalGeneration` checkpoints, which have neither.
    pub use_qformer_text_input: bool,
}

impl Default for QFormerConfig {
    fn default() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            position_embedding_type: "absolute".into(),
            cross_attention_frequency: 2,
            encoder_hidden_size: 1408,
            use_qformer_text_input: false,
        }
    }
}

impl QFormerConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
    /// BLIP-2 puts cross-attention in layers 0, f, 2f, ...
    pub fn has_cross_attention(&self, layer: usize) -> bool {
        layer.is_multiple_of(self.cross_attention_frequency)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Blip2Config {
    pub vision_config: VisionConfig,
    pub qformer_config: QFormerConfig,
    /// The LLM's config (OPT/T5); read by the LLM bridges, not here.
    pub text_config: Option<serde_json::Value>,
    pub num_query_tokens: usize,
    pub image_text_hidden_size: usize,
    pub image_token_index: Option<usize>,
    pub architectures: Vec<String>,
    /// Eps of `vision_model.post_layernorm` (LAVIS `ln_vision`) when it differs from
    /// `vision_config.layer_norm_eps`: LAVIS trains it with 1e-5 while the ViT's own norms use
    /// 1e-6, a distinction HF's config cannot express. Our extension; HF ignores the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ln_vision_eps: Option<f64>,
}

impl Default for Blip2Config {
    fn default() -> Self {
        Self {
            vision_config: VisionConfig::default(),
            qformer_config: QFormerConfig::default(),
            text_config: None,
            num_query_tokens: 32,
            image_text_hidden_size: 256,
            image_token_index: None,
            architectures: Vec::new(),
            ln_vision_eps: None,
        }
    }
}

/// Model config of the `tiny` run preset (`qformer/presets/tiny/config.json`): a 2-layer ViT on
/// 32px images and a 2-layer, 32-wide Q-Former over the hf-tiny tokenizer's 183 tokens + `[DEC]`,
/// the shape of `tests/fixtures/bert-tiny`.
const TINY_CONFIG: &str = include_str!("../presets/tiny/config.json");

impl Blip2Config {
    /// A built-in model config by preset name (`tiny`).
    pub fn preset(name: &str) -> Result<Self> {
        let text = match name {
            "tiny" => TINY_CONFIG,
            other => {
                return Err(Error::Config(format!(
                    "model preset `{other}` has no built-in config (known: tiny)"
                )))
            }
        };
        let cfg: Self = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("built-in model preset `{name}`: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and validates a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| Error::json(path, e))?;
        cfg.validate().map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })?;
        Ok(cfg)
    }

    /// Refuses values that cannot describe a model, naming the field.
    pub fn validate(&self) -> Result<()> {
        let v = &self.vision_config;
        let q = &self.qformer_config;
        let mut problems = Vec::new();
        let mut positive = |name: &str, value: usize| {
            if value == 0 {
                problems.push(format!("{name} must be > 0"));
            }
        };
        positive("vision_config.hidden_size", v.hidden_size);
        positive("vision_config.intermediate_size", v.intermediate_size);
        positive("vision_config.num_attention_heads", v.num_attention_heads);
        positive("vision_config.patch_size", v.patch_size);
        positive("vision_config.image_size", v.image_size);
        positive("vision_config.num_channels", v.num_channels);
        positive("qformer_config.hidden_size", q.hidden_size);
        positive("qformer_config.intermediate_size", q.intermediate_size);
        positive("qformer_config.num_attention_heads", q.num_attention_heads);
        positive("qformer_config.num_hidden_layers", q.num_hidden_layers);
        positive("qformer_config.cross_attention_frequency", q.cross_attention_frequency);
        positive("qformer_config.encoder_hidden_size", q.encoder_hidden_size);
        positive("qformer_config.max_position_embeddings", q.max_position_embeddings);
        positive("num_query_tokens", self.num_query_tokens);
        positive("image_text_hidden_size", self.image_text_hidden_size);
        if v.num_attention_heads > 0 && !v.hidden_size.is_multiple_of(v.num_attention_heads) {
            problems.push(format!(
                "vision_config.num_attention_heads ({}) does not divide hidden_size ({})",
                v.num_attention_heads, v.hidden_size
            ));
        }
        if q.num_attention_heads > 0 && !q.hidden_size.is_multiple_of(q.num_attention_heads) {
            problems.push(format!(
                "qformer_config.num_attention_heads ({}) does not divide hidden_size ({})",
                q.num_attention_heads, q.hidden_size
            ));
        }
        if v.patch_size > 0 && !v.image_size.is_multiple_of(v.patch_size) {
            problems.push(format!(
                "vision_config.patch_size ({}) does not divide image_size ({})",
                v.patch_size, v.image_size
            ));
        }
        if q.encoder_hidden_size != v.hidden_size {
            problems.push(format!(
                "qformer_config.encoder_hidden_size ({}) differs from vision_config.hidden_size ({})",
                q.encoder_hidden_size, v.hidden_size
            ));
        }
        for (name, act) in [
            ("vision_config.hidden_act", &v.hidden_act),
            ("qformer_config.hidden_act", &q.hidden_act),
        ] {
            if act != "gelu" {
                problems
                    .push(format!("{name} {act:?} is not supported (BLIP-2 uses exact \"gelu\")"));
            }
        }
        if q.position_embedding_type != "absolute" {
            problems.push(format!(
                "qformer_config.position_embedding_type {:?} is not supported (only \"absolute\")",
                q.position_embedding_type
            ));
        }
        for (name, p) in [
            ("qformer_config.hidden_dropout_prob", q.hidden_dropout_prob),
            ("qformer_config.attention_probs_dropout_prob", q.attention_probs_dropout_prob),
        ] {
            if !(0.0..1.0).contains(&p) {
                problems.push(format!("{name} ({p}) must be in [0, 1)"));
            }
        }
        for (name, eps) in [
            ("vision_config.layer_norm_eps", v.layer_norm_eps),
            ("qformer_config.layer_norm_eps", q.layer_norm_eps),
            ("ln_vision_eps", self.ln_vision_eps.unwrap_or(v.layer_norm_eps)),
        ] {
            if !(eps > 0.0 && eps.is_finite()) {
                problems.push(format!("{name} ({eps}) must be a positive number"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(problems.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_take_blip2_defaults() {
        let cfg: Blip2Config =
            serde_json::from_str(r#"{"qformer_config": {"use_qformer_text_input": true}}"#)
                .unwrap();
        assert_eq!(cfg.vision_config.num_hidden_layers, 39);
        assert_eq!(cfg.vision_config.intermediate_size, 6144);
        assert_eq!(cfg.qformer_config.hidden_size, 768);
        assert_eq!(cfg.qformer_config.encoder_hidden_size, 1408);
        assert!(cfg.qformer_config.use_qformer_text_input);
        assert_eq!(cfg.num_query_tokens, 32);
        assert_eq!(cfg.image_text_hidden_size, 256);
        cfg.validate().unwrap();
    }

    #[test]
    fn cross_attention_every_other_layer() {
        let q = QFormerConfig::default();
        let layers: Vec<usize> = (0..12).filter(|&i| q.has_cross_attention(i)).collect();
        assert_eq!(layers, vec![0, 2, 4, 6, 8, 10]);
    }

    #[test]
    fn refuses_heads_not_dividing_hidden() {
        let mut cfg = Blip2Config::default();
        cfg.qformer_config.num_attention_heads = 7;
        cfg.vision_config.hidden_size = 100;
        cfg.qformer_config.encoder_hidden_size = 100;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("qformer_config.num_attention_heads (7)"), "{err}");
        assert!(err.contains("vision_config.num_attention_heads (16)"), "{err}");
    }

    #[test]
    fn refuses_encoder_width_mismatch_and_zero_frequency() {
        let mut cfg = Blip2Config::default();
        cfg.qformer_config.encoder_hidden_size = 1024;
        cfg.qformer_config.cross_attention_frequency = 0;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("encoder_hidden_size (1024)"), "{err}");
        assert!(err.contains("cross_attention_frequency must be > 0"), "{err}");
    }
}
