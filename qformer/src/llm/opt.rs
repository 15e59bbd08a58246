//! OPT decoder (HF `OPTForCausalLM`) taking input embeddings, differentiable end to end.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::config::{Activation, OptConfig};
use super::kv_cache::{append, KvCache};
use super::mask::{causal_padding_mask, mask_rows};
use crate::nn::{linear, softmax, LayerNorm, Linear};

/// HF `OPTLearnedPositionalEmbedding` shifts positions by 2 (a fairseq leftover).
const POSITION_OFFSET: i64 = 2;
const LAYER_NORM_EPS: f64 = 1e-5;

#[derive(Debug, Clone)]
struct OptAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl OptAttention {
    fn new(cfg: &OptConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let b = cfg.enable_bias;
        Ok(Self {
            q_proj: linear(h, h, b, vb.pp("q_proj"))?,
            k_proj: linear(h, h, b, vb.pp("k_proj"))?,
            v_proj: linear(h, h, b, vb.pp("v_proj"))?,
            out_proj: linear(h, h, b, vb.pp("out_proj"))?,
            num_heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
        })
    }

    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        x.reshape((b, t, self.num_heads, self.head_dim))?.transpose(1, 2)?.contiguous()
    }

    // x: [B, T, H], mask: [B, 1, T, S] -> ([B, T, H], keys/values [B, h, S, d])
    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        past: Option<&(Tensor, Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let (b, t, h) = x.dims3()?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = self.split_heads(&(self.q_proj.forward(x)? * scale)?)?;
        let k = self.split_heads(&self.k_proj.forward(x)?)?;
        let v = self.split_heads(&self.v_proj.forward(x)?)?;
        let (k, v) = append(past, k, v)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let probs = softmax(&scores)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))?;
        Ok((self.out_proj.forward(&ctx)?, (k, v)))
    }
}

#[derive(Debug, Clone)]
struct OptDecoderLayer {
    self_attn: OptAttention,
    self_attn_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
    activation: Activation,
    pre_norm: bool,
}

impl OptDecoderLayer {
    fn new(cfg: &OptConfig, act: Activation, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            self_attn: OptAttention::new(cfg, vb.pp("self_attn"))?,
            self_attn_layer_norm: LayerNorm::new(h, LAYER_NORM_EPS, vb.pp("self_attn_layer_norm"))?,
            fc1: linear(h, cfg.ffn_dim, cfg.enable_bias, vb.pp("fc1"))?,
            fc2: linear(cfg.ffn_dim, h, cfg.enable_bias, vb.pp("fc2"))?,
            final_layer_norm: LayerNorm::new(h, LAYER_NORM_EPS, vb.pp("final_layer_norm"))?,
            activation: act,
            pre_norm: cfg.do_layer_norm_before,
        })
    }

    // x: [B, T, H] -> [B, T, H]
    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        past: Option<&(Tensor, Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let h = if self.pre_norm { self.self_attn_layer_norm.forward(x)? } else { x.clone() };
        let (h, kv) = self.self_attn.forward(&h, mask, past)?;
        let mut x = (x + h)?;
        if !self.pre_norm {
            x = self.self_attn_layer_norm.forward(&x)?;
        }
        let h = if self.pre_norm { self.final_layer_norm.forward(&x)? } else { x.clone() };
        let h = self.fc2.forward(&self.activation.apply(&self.fc1.forward(&h)?)?)?;
        let mut x = (x + h)?;
        if !self.pre_norm {
            x = self.final_layer_norm.forward(&x)?;
        }
        Ok((x, kv))
    }
}

/// `OPTForCausalLM` with the LM head tied to `embed_tokens`.
#[derive(Debug, Clone)]
pub struct OptForCausalLm {
    embed_tokens: Embedding,
    embed_positions: Embedding,
    project_in: Option<Linear>,
    project_out: Option<Linear>,
    layers: Vec<OptDecoderLayer>,
    final_layer_norm: Option<LayerNorm>,
    cfg: OptConfig,
}

impl OptForCausalLm {
    /// `vb` points at the `OPTForCausalLM` root (`language_model` in a BLIP-2 checkpoint).
    pub fn load(vb: VarBuilder, cfg: &OptConfig) -> crate::Result<Self> {
        cfg.validate()?;
        let act = cfg.activation()?;
        let vb = vb.pp("model").pp("decoder");
        let (h, e) = (cfg.hidden_size, cfg.word_embed_proj_dim());
        let embed_tokens = candle_nn::embedding(cfg.vocab_size, e, vb.pp("embed_tokens"))?;
        let embed_positions = candle_nn::embedding(
            cfg.max_position_embeddings + POSITION_OFFSET as usize,
            h,
            vb.pp("embed_positions"),
        )?;
        let (project_in, project_out) = if e != h {
            (
                Some(linear(e, h, false, vb.pp("project_in"))?),
                Some(linear(h, e, false, vb.pp("project_out"))?),
            )
        } else {
            (None, None)
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| OptDecoderLayer::new(cfg, act, vb.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = if cfg.do_layer_norm_before && !cfg._remove_final_layer_norm {
            Some(LayerNorm::new(h, LAYER_NORM_EPS, vb.pp("final_layer_norm"))?)
        } else {
            None
        };
        Ok(Self {
            embed_tokens,
            embed_positions,
            project_in,
            project_out,
            layers,
            final_layer_norm,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &OptConfig {
        &self.cfg
    }

    pub fn embed_tokens(&self) -> &Embedding {
        &self.embed_tokens
    }

    /// Token embeddings (before `project_in`). ids: [B, T] -> [B, T, E]
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed_tokens.forward(ids)
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// Logits for `inputs_embeds` that follow the cached positions. `attention_mask` covers the
    /// cached and the new positions (0 = padding); positions come from its cumsum like HF, so
    /// left padding is skipped.
    // inputs_embeds: [B, T, E], attention_mask: [B, S_past + T] -> (logits [B, T, V], cache)
    pub fn forward_embeds(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &Tensor,
        cache: Option<KvCache>,
    ) -> Result<(Tensor, KvCache)> {
        let hidden = self.forward_hidden(inputs_embeds, attention_mask, cache)?;
        let (h, cache) = hidden;
        Ok((self.lm_head(&h)?, cache))
    }

    /// Tied LM head. h: [B, T, E] -> [B, T, V]
    pub fn lm_head(&self, h: &Tensor) -> Result<Tensor> {
        crate::nn::Linear::new(self.embed_tokens.embeddings().clone(), None).forward(h)
    }

    // inputs_embeds: [B, T, E], attention_mask: [B, S] -> ([B, T, E], cache)
    pub fn forward_hidden(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &Tensor,
        cache: Option<KvCache>,
    ) -> Result<(Tensor, KvCache)> {
        let (b, t, _) = inputs_embeds.dims3()?;
        let mut cache = cache.unwrap_or_else(|| self.new_cache());
        let past = cache.seq_len();
        let rows = mask_rows(attention_mask)?;
        let s = rows.first().map(|r| r.len()).unwrap_or(0);
        if rows.len() != b || s != past + t {
            candle_core::bail!(
                "OPT attention_mask is [{}, {s}], expected [{b}, {}] (cached {past} + new {t})",
                rows.len(),
                past + t
            );
        }
        let device = inputs_embeds.device();
        // HF: position = cumsum(mask) * mask - 1, then + 2; padding lands on row 1.
        let mut pos = Vec::with_capacity(b * t);
        for row in &rows {
            let mut c = 0i64;
            let full: Vec<i64> = row
                .iter()
                .map(|&k| {
                    c += k as i64;
                    if k {
                        c - 1
                    } else {
                        -1
                    }
                })
                .collect();
            pos.extend(full[past..].iter().map(|p| (p + POSITION_OFFSET) as u32));
        }
        if let Some(&m) = pos.iter().max() {
            if m as usize >= self.cfg.max_position_embeddings + POSITION_OFFSET as usize {
                candle_core::bail!(
                    "OPT sequence of {} positions exceeds max_position_embeddings {}",
                    m as i64 - POSITION_OFFSET + 1,
                    self.cfg.max_position_embeddings
                );
            }
        }
        let pos = Tensor::from_vec(pos, (b, t), device)?;
        let mut x = inputs_embeds.clone();
        if let Some(p) = &self.project_in {
            x = p.forward(&x)?;
        }
        x = x.broadcast_add(&self.embed_positions.forward(&pos)?.to_dtype(x.dtype())?)?;
        let mask = causal_padding_mask(&rows, t, device)?.to_dtype(x.dtype())?;
        for (i, layer) in self.layers.iter().enumerate() {
            let (y, (k, v)) = layer.forward(&x, &mask, cache.layer(i))?;
            cache.set_layer(i, k, v);
            x = y;
        }
        if let Some(ln) = &self.final_layer_norm {
            x = ln.forward(&x)?;
        }
        if let Some(p) = &self.project_out {
            x = p.forward(&x)?;
        }
        Ok((x, cache))
    }

    /// Dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.embed_tokens.embeddings().dtype()
    }
}
