//! HF `text_config` of a BLIP-2 checkpoint: OPT, T5 or LLaMA, with HF defaults for every absent
//! field.

use serde::Deserialize;

use crate::{Error, Result};

/// Activation named by an HF config (`activation_function`, `dense_act_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu,
    /// Exact erf GELU (HF "gelu").
    Gelu,
    /// tanh approximation (HF "gelu_new", "gelu_pytorch_tanh", FLAN-T5's native activation).
    GeluTanh,
    Silu,
}

impl Activation {
    pub fn from_hf(name: &str) -> Result<Self> {
        match name {
            "relu" => Ok(Self::Relu),
            "gelu" => Ok(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Self::GeluTanh),
            "silu" | "swish" => Ok(Self::Silu),
            other => Err(Error::Config(format!("unsupported activation function {other:?}"))),
        }
    }

    pub fn apply(&self, x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        match self {
            Self::Relu => x.relu(),
            Self::Gelu => x.gelu_erf(),
            Self::GeluTanh => x.gelu(),
            Self::Silu => x.silu(),
        }
    }
}

fn d_true() -> bool {
    true
}
fn d_opt_vocab() -> usize {
    50272
}
fn d_768() -> usize {
    768
}
fn d_12() -> usize {
    12
}
fn d_3072() -> usize {
    3072
}
fn d_2048() -> usize {
    2048
}
fn d_relu() -> String {
    "relu".into()
}
fn d_opt_bos() -> u32 {
    2
}
fn d_opt_pad() -> u32 {
    1
}

/// HF `OPTConfig`.
#[derive(Debug, Clone, Deserialize)]
pub struct OptConfig {
    #[serde(default = "d_opt_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_768")]
    pub hidden_size: usize,
    #[serde(default = "d_12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_3072")]
    pub ffn_dim: usize,
    #[serde(default = "d_12")]
    pub num_attention_heads: usize,
    #[serde(default = "d_2048")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_true")]
    pub do_layer_norm_before: bool,
    #[serde(default)]
    pub _remove_final_layer_norm: bool,
    /// Defaults to `hidden_size` (HF sets it so when absent).
    #[serde(default)]
    pub word_embed_proj_dim: Option<usize>,
    #[serde(default = "d_relu")]
    pub activation_function: String,
    #[serde(default = "d_true")]
    pub enable_bias: bool,
    #[serde(default = "d_true")]
    pub layer_norm_elementwise_affine: bool,
    #[serde(default = "d_opt_bos")]
    pub bos_token_id: u32,
    #[serde(default = "d_opt_bos")]
    pub eos_token_id: u32,
    #[serde(default = "d_opt_pad")]
    pub pad_token_id: u32,
}

impl OptConfig {
    /// OPT-125m shape (facebook/opt-125m).
    pub fn opt_125m() -> Self {
        serde_json::from_str("{}").expect("all OPT config fields have defaults")
    }

    pub fn word_embed_proj_dim(&self) -> usize {
        self.word_embed_proj_dim.unwrap_or(self.hidden_size)
    }

    pub fn activation(&self) -> Result<Activation> {
        Activation::from_hf(&self.activation_function)
    }

    pub fn validate(&self) -> Result<()> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::Config(format!(
                "OPT hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if !self.layer_norm_elementwise_affine {
            return Err(Error::Config(
                "OPT layer_norm_elementwise_affine=false is not supported".into(),
            ));
        }
        self.activation()?;
        Ok(())
    }
}

fn d_t5_vocab() -> usize {
    32128
}
fn d_512() -> usize {
    512
}
fn d_64() -> usize {
    64
}
fn d_6() -> usize {
    6
}
fn d_8() -> usize {
    8
}
fn d_32() -> usize {
    32
}
fn d_128() -> usize {
    128
}
fn d_eps() -> f64 {
    1e-6
}
fn d_ffproj() -> String {
    "relu".into()
}
fn d_t5_eos() -> u32 {
    1
}

/// HF `T5Config`.
#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    #[serde(default = "d_t5_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_512")]
    pub d_model: usize,
    #[serde(default = "d_64")]
    pub d_kv: usize,
    #[serde(default = "d_3072")]
    pub d_ff: usize,
    #[serde(default = "d_6")]
    pub num_layers: usize,
    /// Defaults to `num_layers`.
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    #[serde(default = "d_8")]
    pub num_heads: usize,
    #[serde(default = "d_32")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "d_128")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "d_eps")]
    pub layer_norm_epsilon: f64,
    /// "relu", "gated-gelu", "gated-silu", ...: `gated-` prefix selects the two-matrix FFN.
    #[serde(default = "d_ffproj")]
    pub feed_forward_proj: String,
    /// Overrides the activation derived from `feed_forward_proj` (LAVIS/HF hub BLIP-2 set "gelu").
    #[serde(default)]
    pub dense_act_fn: Option<String>,
    #[serde(default = "d_true")]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub decoder_start_token_id: u32,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default = "d_t5_eos")]
    pub eos_token_id: u32,
}

impl T5Config {
    pub fn num_decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    pub fn is_gated(&self) -> bool {
        self.feed_forward_proj.starts_with("gated-")
    }

    /// HF T5Config: `dense_act_fn` = the part after `gated-`, except that "gated-gelu" means gelu_new.
    pub fn activation(&self) -> Result<Activation> {
        if let Some(name) = &self.dense_act_fn {
            return Activation::from_hf(name);
        }
        let act = self.feed_forward_proj.trim_start_matches("gated-");
        if self.feed_forward_proj == "gated-gelu" {
            return Ok(Activation::GeluTanh);
        }
        Activation::from_hf(act)
    }

    pub fn validate(&self) -> Result<()> {
        if self.num_heads == 0 || self.d_kv == 0 {
            return Err(Error::Config("T5 num_heads and d_kv must be positive".into()));
        }
        if self.relative_attention_num_buckets < 4 {
            return Err(Error::Config(
                "T5 relative_attention_num_buckets must be at least 4".into(),
            ));
        }
        self.activation()?;
        Ok(())
    }
}

/// The LLM part of a BLIP-2 `config.json`.
#[derive(Debug, Clone)]
pub enum TextConfig {
    Opt(OptConfig),
    T5(T5Config),
    /// LLaMA / Vicuna (LAVIS `blip2_vicuna_instruct`).
    Llama(super::llama::LlamaConfig),
}

/// The fields of a BLIP-2 `config.json` the LLM bridge needs.
#[derive(Debug, Clone)]
pub struct Blip2LlmConfig {
    pub text: TextConfig,
    pub num_query_tokens: usize,
    /// Q-Former hidden size (input width of `language_projection`).
    pub qformer_hidden_size: usize,
    /// The `<image>` vocabulary row that HF >= 4.47 replaces with the projected queries.
    pub image_token_index: Option<u32>,
}

impl Blip2LlmConfig {
    /// Parse a BLIP-2 `config.json` (HF `Blip2Config`).
    pub fn from_json_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::json(path, e))?;
        Self::from_value(&v).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn from_value(v: &serde_json::Value) -> Result<Self> {
        let tc = v
            .get("text_config")
            .ok_or_else(|| Error::Config("missing field text_config".into()))?;
        let model_type = tc.get("model_type").and_then(|m| m.as_str()).unwrap_or("opt");
        let bad = |e: serde_json::Error| Error::Config(format!("text_config: {e}"));
        let text = match model_type {
            "opt" => {
                let c: OptConfig = serde_json::from_value(tc.clone()).map_err(bad)?;
                c.validate()?;
                TextConfig::Opt(c)
            }
            "t5" => {
                let c: T5Config = serde_json::from_value(tc.clone()).map_err(bad)?;
                c.validate()?;
                TextConfig::T5(c)
            }
            "llama" => {
                let c: super::llama::LlamaConfig =
                    serde_json::from_value(tc.clone()).map_err(bad)?;
                c.validate()?;
                TextConfig::Llama(c)
            }
            other => {
                return Err(Error::Config(format!(
                    "text_config.model_type {other:?} is not supported (opt, t5 or llama)"
                )))
            }
        };
        let num_query_tokens =
            v.get("num_query_tokens").and_then(|n| n.as_u64()).unwrap_or(32) as usize;
        let qformer_hidden_size = v
            .get("qformer_config")
            .and_then(|q| q.get("hidden_size"))
            .and_then(|n| n.as_u64())
            .unwrap_or(768) as usize;
        let image_token_index =
            v.get("image_token_index").and_then(|n| n.as_u64()).map(|n| n as u32);
        Ok(Self { text, num_query_tokens, qformer_hidden_size, image_token_index })
    }

    /// Width of the LLM input embeddings (output of `language_projection`).
    pub fn llm_hidden_size(&self) -> usize {
        match &self.text {
            TextConfig::Opt(c) => c.hidden_size,
            TextConfig::T5(c) => c.d_model,
            TextConfig::Llama(c) => c.hidden_size,
        }
    }
}
