//! LLaMA-family decoder (HF `LlamaForCausalLM`) taking input embeddings, differentiable end to
//! end: RMSNorm, rotary embeddings (rotate-half form, default / linear / llama3 frequencies),
//! grouped-query attention and the SwiGLU MLP, all from ops that have a backward.

use std::path::Path;

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, VarBuilder};
use serde::Deserialize;

use super::kv_cache::{append, KvCache};
use super::mask::{causal_padding_mask, mask_rows};
use crate::nn::{linear, masked_softmax, Linear};
use crate::Error;

fn d_vocab() -> usize {
    32000
}
fn d_hidden() -> usize {
    4096
}
fn d_intermediate() -> usize {
    11008
}
fn d_32() -> usize {
    32
}
fn d_max_pos() -> usize {
    2048
}
fn d_eps() -> f64 {
    1e-6
}
fn d_theta() -> f64 {
    10000.0
}
fn d_silu() -> String {
    "silu".into()
}

/// A token id field that HF writes as one id or a list (Llama 3's `eos_token_id`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            Self::One(i) => vec![*i],
            Self::Many(v) => v.clone(),
        }
    }
}

/// HF `LlamaConfig`, read from a `config.json` as it lies (HF defaults for absent fields).
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d_32")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_32")]
    pub num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (multi-head attention).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "d_silu")]
    pub hidden_act: String,
    #[serde(default = "d_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "d_theta")]
    pub rope_theta: f64,
    /// Raw HF dict; interpreted (and checked) by [`LlamaConfig::rope_scaling`].
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub bos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub pad_token_id: Option<TokenIds>,
}

/// The rotary frequency schedule named by `rope_scaling`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// No `rope_scaling` (or `rope_type: "default"`).
    Default,
    /// `inv_freq / factor` (position interpolation).
    Linear { factor: f64 },
    /// Llama 3.1's band-wise rescaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

fn scaling_number(dict: &serde_json::Value, key: &str) -> crate::Result<f64> {
    dict.get(key).and_then(|v| v.as_f64()).ok_or_else(|| {
        Error::Config(format!("Llama rope_scaling.{key} is missing or not a number"))
    })
}

impl LlamaConfig {
    /// Parse and validate an HF `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> crate::Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| Error::json(path, e))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn num_key_value_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_token_id.as_ref().map(TokenIds::to_vec).unwrap_or_default()
    }

    /// `rope_scaling` as HF reads it (`rope_type`, or the legacy `type`).
    pub fn rope_scaling(&self) -> crate::Result<RopeScaling> {
        let dict = match &self.rope_scaling {
            None | Some(serde_json::Value::Null) => return Ok(RopeScaling::Default),
            Some(d @ serde_json::Value::Object(_)) => d,
            Some(other) => {
                return Err(Error::Config(format!(
                    "Llama rope_scaling must be an object or null, got {other}"
                )))
            }
        };
        let ty = dict.get("rope_type").or_else(|| dict.get("type")).and_then(|v| v.as_str());
        match ty {
            Some("default") => Ok(RopeScaling::Default),
            Some("linear") => Ok(RopeScaling::Linear { factor: scaling_number(dict, "factor")? }),
            Some("llama3") => Ok(RopeScaling::Llama3 {
                factor: scaling_number(dict, "factor")?,
                low_freq_factor: scaling_number(dict, "low_freq_factor")?,
                high_freq_factor: scaling_number(dict, "high_freq_factor")?,
                original_max_position_embeddings: scaling_number(
                    dict,
                    "original_max_position_embeddings",
                )?,
            }),
            Some(other) => Err(Error::Config(format!(
                "Llama rope_scaling.rope_type {other:?} is not supported (default, linear, llama3)"
            ))),
            None => {
                Err(Error::Config("Llama rope_scaling has no rope_type (or type) string".into()))
            }
        }
    }

    pub fn validate(&self) -> crate::Result<()> {
        let (heads, kv) = (self.num_attention_heads, self.num_key_value_heads());
        if heads == 0 || kv == 0 || !heads.is_multiple_of(kv) {
            return Err(Error::Config(format!(
                "Llama num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}"
            )));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(heads) {
            return Err(Error::Config(format!(
                "Llama hidden_size {} is not divisible by num_attention_heads {heads} (and no \
                 head_dim is given)",
                self.hidden_size
            )));
        }
        let d = self.head_dim();
        if d == 0 || !d.is_multiple_of(2) {
            return Err(Error::Config(format!("Llama head_dim {d} must be even and non-zero")));
        }
        // HF ACT2FN maps both names to SiLU.
        if self.hidden_act != "silu" && self.hidden_act != "swish" {
            return Err(Error::Config(format!(
                "Llama hidden_act {:?} is not supported (only \"silu\")",
                self.hidden_act
            )));
        }
        if let RopeScaling::Llama3 { low_freq_factor, high_freq_factor, .. } =
            self.rope_scaling()?
        {
            if high_freq_factor == low_freq_factor {
                return Err(Error::Config(
                    "Llama rope_scaling.high_freq_factor equals low_freq_factor".into(),
                ));
            }
        }
        Ok(())
    }

    /// Rotary inverse frequencies `[head_dim / 2]`, in f32 like HF's `rope_init_fn`s.
    pub fn inv_freq(&self) -> crate::Result<Vec<f32>> {
        let dim = self.head_dim();
        let base = self.rope_theta as f32;
        let inv: Vec<f32> =
            (0..dim).step_by(2).map(|i| 1.0 / base.powf(i as f32 / dim as f32)).collect();
        Ok(match self.rope_scaling()? {
            RopeScaling::Default => inv,
            RopeScaling::Linear { factor } => inv.iter().map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let (factor, lo, hi, old) =
                    (factor as f32, low_freq_factor as f32, high_freq_factor as f32, old as f32);
                let low_freq_wavelen = old / lo;
                let high_freq_wavelen = old / hi;
                inv.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        let scaled = if wavelen > low_freq_wavelen { f / factor } else { f };
                        // HF: ~(wavelen < high) & ~(wavelen > low); wavelengths are positive.
                        let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                        if medium {
                            let smooth = (old / wavelen - lo) / (hi - lo);
                            (1.0 - smooth) * scaled / factor + smooth * scaled
                        } else {
                            scaled
                        }
                    })
                    .collect()
            }
        })
    }
}

/// HF `LlamaRMSNorm`: `weight * (x * rsqrt(mean(x²) + eps)).to(input dtype)`, statistics in f32.
#[derive(Debug, Clone)]
struct LlamaRmsNorm {
    weight: Tensor,
    eps: f64,
}

impl LlamaRmsNorm {
    fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?;
        Ok(Self { weight, eps })
    }

    // x: [..., H] -> [..., H]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let in_dtype = x.dtype();
        let x32 = if in_dtype == DType::F64 { x.clone() } else { x.to_dtype(DType::F32)? };
        let var = x32.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x32.broadcast_mul(&(var + self.eps)?.sqrt()?.recip()?)?;
        normed.to_dtype(in_dtype)?.broadcast_mul(&self.weight)
    }
}

/// `rotate_half`: `cat(-x2, x1)` over the last dim.
// x: [B, h, T, d] -> [B, h, T, d]
fn rotate_half(x: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d - d / 2)?;
    Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)
}

// x: [B, h, T, d], cos/sin: [B, 1, T, d] -> [B, h, T, d]
fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(cos)? + rotate_half(x)?.broadcast_mul(sin)?
}

/// HF `repeat_kv`: each key/value head serves `n_rep` consecutive query heads.
// x: [B, kv, S, d] -> [B, kv * n_rep, S, d]
fn repeat_kv(x: &Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x.clone());
    }
    let (b, kv, s, d) = x.dims4()?;
    x.unsqueeze(2)?.broadcast_as((b, kv, n_rep, s, d))?.contiguous()?.reshape((b, kv * n_rep, s, d))
}

#[derive(Debug, Clone)]
struct LlamaAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl LlamaAttention {
    fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim());
        let (heads, kv) = (cfg.num_attention_heads, cfg.num_key_value_heads());
        let b = cfg.attention_bias;
        Ok(Self {
            q_proj: linear(h, heads * d, b, vb.pp("q_proj"))?,
            k_proj: linear(h, kv * d, b, vb.pp("k_proj"))?,
            v_proj: linear(h, kv * d, b, vb.pp("v_proj"))?,
            o_proj: linear(heads * d, h, b, vb.pp("o_proj"))?,
            num_heads: heads,
            num_kv_heads: kv,
            head_dim: d,
        })
    }

    // x: [B, T, H] -> [B, heads, T, d]
    fn split_heads(&self, x: &Tensor, heads: usize) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        x.reshape((b, t, heads, self.head_dim))?.transpose(1, 2)?.contiguous()
    }

    /// Keys/values are cached after RoPE and before `repeat_kv` (`[B, kv_heads, S, d]`), as HF's
    /// `DynamicCache` holds them.
    // x: [B, T, H], mask: [B, 1, T, S], cos/sin: [B, 1, T, d], past: [B, kv, S - T, d]
    //   -> ([B, T, H], keys/values [B, kv, S, d])
    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        past: Option<&(Tensor, Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let (b, t, _) = x.dims3()?;
        let q = self.split_heads(&self.q_proj.forward(x)?, self.num_heads)?;
        let k = self.split_heads(&self.k_proj.forward(x)?, self.num_kv_heads)?;
        let v = self.split_heads(&self.v_proj.forward(x)?, self.num_kv_heads)?;
        let q = apply_rotary(&q, cos, sin)?;
        let k = apply_rotary(&k, cos, sin)?;
        let (k_all, v_all) = append(past, k, v)?;
        let n_rep = self.num_heads / self.num_kv_heads;
        let k = repeat_kv(&k_all, n_rep)?;
        let v = repeat_kv(&v_all, n_rep)?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
        let probs = masked_softmax(&scores, mask)?;
        let ctx =
            probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, self.num_heads * self.head_dim))?;
        Ok((self.o_proj.forward(&ctx)?, (k_all, v_all)))
    }
}

#[derive(Debug, Clone)]
struct LlamaMlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl LlamaMlp {
    fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(Self {
            gate_proj: linear(h, i, b, vb.pp("gate_proj"))?,
            up_proj: linear(h, i, b, vb.pp("up_proj"))?,
            down_proj: linear(i, h, b, vb.pp("down_proj"))?,
        })
    }

    // x: [B, T, H] -> [B, T, H]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x)?.silu()?;
        self.down_proj.forward(&(gate * self.up_proj.forward(x)?)?)
    }
}

#[derive(Debug, Clone)]
struct LlamaDecoderLayer {
    self_attn: LlamaAttention,
    mlp: LlamaMlp,
    input_layernorm: LlamaRmsNorm,
    post_attention_layernorm: LlamaRmsNorm,
}

impl LlamaDecoderLayer {
    fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            self_attn: LlamaAttention::new(cfg, vb.pp("self_attn"))?,
            mlp: LlamaMlp::new(cfg, vb.pp("mlp"))?,
            input_layernorm: LlamaRmsNorm::new(h, eps, vb.pp("input_layernorm"))?,
            post_attention_layernorm: LlamaRmsNorm::new(h, eps, vb.pp("post_attention_layernorm"))?,
        })
    }

    // x: [B, T, H], mask: [B, 1, T, S], cos/sin: [B, 1, T, d] -> ([B, T, H], keys/values)
    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        past: Option<&(Tensor, Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let (h, kv) =
            self.self_attn.forward(&self.input_layernorm.forward(x)?, mask, cos, sin, past)?;
        let x = (x + h)?;
        let h = self.mlp.forward(&self.post_attention_layernorm.forward(&x)?)?;
        Ok(((x + h)?, kv))
    }
}

/// HF `LlamaForCausalLM`: `lm_head` tied to `embed_tokens` when the config says so. The KV cache
/// ([`KvCache`]) lives outside the model ([`Self::forward_embeds_cached`]).
#[derive(Debug, Clone)]
pub struct LlamaForCausalLm {
    embed_tokens: Embedding,
    layers: Vec<LlamaDecoderLayer>,
    norm: LlamaRmsNorm,
    lm_head: Linear,
    inv_freq: Vec<f32>,
    cfg: LlamaConfig,
}

impl LlamaForCausalLm {
    /// `vb` points at the `LlamaForCausalLM` root (`model.*`, `lm_head.weight`).
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> crate::Result<Self> {
        cfg.validate()?;
        let inv_freq = cfg.inv_freq()?;
        let m = vb.pp("model");
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        let embed_tokens = candle_nn::embedding(v, h, m.pp("embed_tokens"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| LlamaDecoderLayer::new(cfg, m.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let norm = LlamaRmsNorm::new(h, cfg.rms_norm_eps, m.pp("norm"))?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::new(embed_tokens.embeddings().clone(), None)
        } else {
            linear(h, v, false, vb.pp("lm_head"))?
        };
        Ok(Self { embed_tokens, layers, norm, lm_head, inv_freq, cfg: cfg.clone() })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    pub fn embed_tokens(&self) -> &Embedding {
        &self.embed_tokens
    }

    /// Dtype of the activations (the norms' weights): the matrices may be kept in their stored
    /// bf16/f16 ([`crate::weights::frozen_var_builder`]) while this is f32.
    pub fn dtype(&self) -> DType {
        self.norm.weight.dtype()
    }

    /// Dtype the matrices are held in (`embed_tokens`, the projections, the LM head).
    pub fn weight_dtype(&self) -> DType {
        self.embed_tokens.embeddings().dtype()
    }

    /// Token embeddings, in the activation dtype ([`Self::dtype`]). ids: [B, L] -> [B, L, H]
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let e = self.embed_tokens.forward(ids)?;
        if e.dtype() == self.dtype() {
            Ok(e)
        } else {
            e.to_dtype(self.dtype())
        }
    }

    /// Positions as HF's `generate` derives them from the mask: `cumsum(mask) - 1`, clamped at 0
    /// (so left padding is skipped; a full mask gives `0..L`).
    pub fn positions_from_mask(attention_mask: &Tensor) -> Result<Vec<Vec<u32>>> {
        Ok(mask_rows(attention_mask)?
            .iter()
            .map(|row| {
                let mut c = 0u32;
                row.iter()
                    .map(|&k| {
                        c += k as u32;
                        c.saturating_sub(1)
                    })
                    .collect()
            })
            .collect())
    }

    /// Logits with positions from the mask ([`Self::positions_from_mask`]).
    // embeds: [B, L, H], attention_mask: [B, L] (1 = token) -> logits [B, L, V] f32
    pub fn forward_embeds(&self, embeds: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let pos = Self::positions_from_mask(attention_mask)?;
        self.forward_embeds_at(embeds, attention_mask, &pos)
    }

    /// Logits at explicit `position_ids` (HF `forward(position_ids=...)`; HF's `forward` without
    /// them uses `0..L` whatever the padding).
    // embeds: [B, L, H], attention_mask: [B, L], position_ids: B rows of L -> logits [B, L, V] f32
    pub fn forward_embeds_at(
        &self,
        embeds: &Tensor,
        attention_mask: &Tensor,
        position_ids: &[Vec<u32>],
    ) -> Result<Tensor> {
        let h = self.forward_hidden(embeds, attention_mask, position_ids)?;
        self.lm_head.forward(&h)?.to_dtype(DType::F32)
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// LM head (tied or not), in the weights' dtype. h: [B, T, H] -> [B, T, V]
    pub fn lm_head(&self, h: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(h)
    }

    /// Logits for `embeds` that follow the cached positions (OPT's `forward_embeds` with a
    /// cache). `attention_mask` covers the cached and the new positions (0 = padding); positions
    /// are HF `generate`'s `cumsum(mask) - 1` over the whole mask, clamped at 0 like
    /// [`Self::positions_from_mask`], taken at the new positions. With an empty cache this is
    /// [`Self::forward_embeds`].
    // embeds: [B, T, H], attention_mask: [B, S_past + T] -> (logits [B, T, V] f32, cache)
    pub fn forward_embeds_cached(
        &self,
        embeds: &Tensor,
        attention_mask: &Tensor,
        cache: Option<KvCache>,
    ) -> Result<(Tensor, KvCache)> {
        let (h, cache) = self.forward_hidden_cached(embeds, attention_mask, cache)?;
        Ok((self.lm_head.forward(&h)?.to_dtype(DType::F32)?, cache))
    }

    /// Final hidden states of the new positions, with mask-derived positions (see
    /// [`Self::forward_embeds_cached`]).
    // embeds: [B, T, H], attention_mask: [B, S_past + T] -> ([B, T, H], cache)
    pub fn forward_hidden_cached(
        &self,
        embeds: &Tensor,
        attention_mask: &Tensor,
        cache: Option<KvCache>,
    ) -> Result<(Tensor, KvCache)> {
        let past = cache.as_ref().map(KvCache::seq_len).unwrap_or(0);
        let pos: Vec<Vec<u32>> = Self::positions_from_mask(attention_mask)?
            .into_iter()
            .map(|r| r.get(past..).map(<[u32]>::to_vec).unwrap_or_default())
            .collect();
        self.forward_hidden_at_cached(embeds, attention_mask, &pos, cache)
    }

    /// Final hidden states of the new positions at explicit `position_ids` (one per new
    /// position), attending to the cached keys/values.
    // embeds: [B, T, H], attention_mask: [B, S_past + T], position_ids: B rows of T
    //   -> ([B, T, H], cache)
    pub fn forward_hidden_at_cached(
        &self,
        embeds: &Tensor,
        attention_mask: &Tensor,
        position_ids: &[Vec<u32>],
        cache: Option<KvCache>,
    ) -> Result<(Tensor, KvCache)> {
        let (b, t, _) = embeds.dims3()?;
        let mut cache = cache.unwrap_or_else(|| self.new_cache());
        let past = cache.seq_len();
        let rows = mask_rows(attention_mask)?;
        if rows.len() != b || rows.iter().any(|r| r.len() != past + t) {
            candle_core::bail!(
                "Llama attention_mask is {:?}, expected [{b}, {}] (cached {past} + new {t})",
                attention_mask.dims(),
                past + t
            );
        }
        if position_ids.len() != b || position_ids.iter().any(|r| r.len() != t) {
            candle_core::bail!("Llama position_ids must be [{b}, {t}] like the new embeddings");
        }
        let dev = embeds.device();
        let dtype = embeds.dtype();
        let (cos, sin) = self.rotary(position_ids, dtype, dev)?;
        let mask = causal_padding_mask(&rows, t, dev)?.to_dtype(dtype)?;
        let mut x = embeds.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let (y, (k, v)) = layer.forward(&x, &mask, &cos, &sin, cache.layer(i))?;
            cache.set_layer(i, k, v);
            x = y;
        }
        Ok((self.norm.forward(&x)?, cache))
    }

    /// `cos`, `sin` of the rotary angles, in f32 then cast to `dtype` like HF.
    // position_ids: B rows of L -> ([B, 1, L, d], [B, 1, L, d])
    fn rotary(
        &self,
        position_ids: &[Vec<u32>],
        dtype: DType,
        dev: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let b = position_ids.len();
        let l = position_ids.first().map(|r| r.len()).unwrap_or(0);
        let half = self.inv_freq.len();
        let d = 2 * half;
        let mut cos = Vec::with_capacity(b * l * d);
        let mut sin = Vec::with_capacity(b * l * d);
        for row in position_ids {
            for &p in row {
                // emb = cat(freqs, freqs); freqs = position * inv_freq (an f32 product, like HF).
                let angles: Vec<f32> = self.inv_freq.iter().map(|&f| p as f32 * f).collect();
                for _ in 0..2 {
                    cos.extend(angles.iter().map(|&a| (a as f64).cos() as f32));
                    sin.extend(angles.iter().map(|&a| (a as f64).sin() as f32));
                }
            }
        }
        let cos = Tensor::from_vec(cos, (b, 1, l, d), dev)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (b, 1, l, d), dev)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }

    /// Final hidden states (after `model.norm`).
    // embeds: [B, L, H], attention_mask: [B, L], position_ids: B rows of L -> [B, L, H]
    pub fn forward_hidden(
        &self,
        embeds: &Tensor,
        attention_mask: &Tensor,
        position_ids: &[Vec<u32>],
    ) -> Result<Tensor> {
        let (b, l, _) = embeds.dims3()?;
        let rows = mask_rows(attention_mask)?;
        if rows.len() != b || rows.iter().any(|r| r.len() != l) {
            candle_core::bail!(
                "Llama attention_mask is {:?}, expected [{b}, {l}] like the embeddings",
                attention_mask.dims()
            );
        }
        if position_ids.len() != b || position_ids.iter().any(|r| r.len() != l) {
            candle_core::bail!("Llama position_ids must be [{b}, {l}] like the embeddings");
        }
        // No cache: the same computation, the keys/values it collects are dropped.
        Ok(self.forward_hidden_at_cached(embeds, attention_mask, position_ids, None)?.0)
    }
}
