//! The quickstart's three models, written as one HF `Blip2ForConditionalGeneration`
//! `config.json` and built with a seeded fresh init: a frozen tiny ViT (BLIP-2 vision
//! architecture), the tiny Q-Former with its stage-one heads, and a tiny OPT with its
//! `language_projection`.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use serde_json::json;

use qformer::llm::{Blip2Llm, Blip2LlmConfig, LanguageModel, OptForCausalLm};
use qformer::model::Blip2Qformer;
use qformer::Blip2Config;
use train::rng;

use train::init::named_vars;
use train::{init_fresh, FreshModel, InitStreams};

/// Widths and depths of the three models.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sizes {
    pub image_size: usize,
    pub patch_size: usize,
    pub vit_hidden: usize,
    pub vit_layers: usize,
    pub qformer_hidden: usize,
    pub qformer_layers: usize,
    pub queries: usize,
    pub embed_dim: usize,
    pub opt_hidden: usize,
    pub opt_layers: usize,
    /// Q-Former hidden and attention dropout (BERT's 0.1 in BLIP-2).
    pub qformer_dropout: f64,
}

/// `config.json` of the whole BLIP-2 model (HF layout, so `blip2 generate` etc. can read it).
pub fn write_config(path: &Path, s: &Sizes, qformer_vocab: usize, opt_vocab: usize) -> Result<()> {
    let cfg = json!({
        "architectures": ["Blip2ForConditionalGeneration"],
        "model_type": "blip-2",
        "num_query_tokens": s.queries,
        "image_text_hidden_size": s.embed_dim,
        "use_decoder_only_language_model": true,
        "vision_config": {
            "hidden_size": s.vit_hidden, "intermediate_size": 4 * s.vit_hidden,
            "num_hidden_layers": s.vit_layers, "num_attention_heads": 4,
            "image_size": s.image_size, "patch_size": s.patch_size,
            "hidden_act": "gelu", "layer_norm_eps": 1e-6, "qkv_bias": true,
            "attention_dropout": 0.0, "model_type": "blip_2_vision_model"
        },
        "qformer_config": {
            "vocab_size": qformer_vocab, "hidden_size": s.qformer_hidden,
            "num_hidden_layers": s.qformer_layers, "num_attention_heads": 4,
            "intermediate_size": 4 * s.qformer_hidden, "hidden_act": "gelu",
            "hidden_dropout_prob": s.qformer_dropout,
            "attention_probs_dropout_prob": s.qformer_dropout,
            "max_position_embeddings": 64, "layer_norm_eps": 1e-12, "pad_token_id": 0,
            "position_embedding_type": "absolute", "cross_attention_frequency": 1,
            "encoder_hidden_size": s.vit_hidden, "model_type": "blip_2_qformer",
            "use_qformer_text_input": true
        },
        "text_config": {
            "model_type": "opt", "vocab_size": opt_vocab, "hidden_size": s.opt_hidden,
            "num_hidden_layers": s.opt_layers, "ffn_dim": 4 * s.opt_hidden,
            "num_attention_heads": 4, "max_position_embeddings": 96,
            "word_embed_proj_dim": s.opt_hidden, "do_layer_norm_before": true,
            "activation_function": "relu", "dropout": 0.0, "enable_bias": true,
            "bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1
        }
    });
    std::fs::write(path, serde_json::to_string_pretty(&cfg)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Every model of the quickstart and the variables behind them.
pub struct Models {
    pub qformer: Blip2Qformer,
    /// ViT (frozen throughout).
    pub vision_vars: VarMap,
    /// `ln_vision`, query tokens, Q-Former, stage-one heads, ITG head.
    pub qformer_vars: VarMap,
    pub llm: Blip2Llm,
    /// `language_projection.*` and `language_model.*`.
    pub llm_vars: VarMap,
}

impl Models {
    /// Fresh models from `config.json`; each group gets its own seeded init stream.
    pub fn fresh(config_path: &Path, seed: u64, device: &Device) -> Result<Self> {
        let config = Blip2Config::from_file(config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let llm_config = Blip2LlmConfig::from_json_file(config_path)?;
        let streams = InitStreams::PerGroup {
            frozen: rng::substream(seed, "init/vision"),
            trainable: rng::substream(seed, "init/qformer"),
        };
        let fresh = FreshModel::with_streams(&config, streams, device)?;
        let (qformer, vision_vars, qformer_vars) = (fresh.model, fresh.frozen, fresh.trainable);
        let llm_vars = VarMap::new();
        let llm =
            Blip2Llm::load(VarBuilder::from_varmap(&llm_vars, DType::F32, device), &llm_config)?;
        init_fresh(&named_vars(&llm_vars)?, &mut rng::substream(seed, "init/llm"))?;
        Ok(Self { qformer, vision_vars, qformer_vars, llm, llm_vars })
    }

    pub fn opt(&self) -> &OptForCausalLm {
        match &self.llm.language_model {
            LanguageModel::Opt(m) => m,
            LanguageModel::T5(_) | LanguageModel::Llama(_) => {
                unreachable!("the quickstart config names an OPT")
            }
        }
    }

    /// Every tensor in HF names (one `model.safetensors` of a `Blip2ForConditionalGeneration`
    /// plus the LAVIS-only ITG head and temperature, which HF loaders skip).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut all = std::collections::HashMap::new();
        for vm in [&self.vision_vars, &self.qformer_vars, &self.llm_vars] {
            for (name, var) in named_vars(vm)? {
                all.insert(name, var.as_tensor().clone());
            }
        }
        candle_core::safetensors::save(&all, path)
            .with_context(|| format!("writing {}", path.display()))
    }
}
