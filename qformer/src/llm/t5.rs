//! T5 / FLAN-T5 encoder-decoder (HF `T5ForConditionalGeneration`) taking encoder input
//! embeddings, differentiable end to end.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::config::{Activation, T5Config};
use super::kv_cache::{append, KvCache};
use super::mask::{causal_padding_mask, mask_rows, padding_mask};
use crate::nn::{linear, softmax, Linear, RmsNorm};

/// HF `T5Attention._relative_position_bucket`, in f32 like torch so bucket edges agree.
pub fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut num_buckets = num_buckets as i64;
    let mut ret = 0i64;
    let n = if bidirectional {
        num_buckets /= 2;
        if relative_position > 0 {
            ret += num_buckets;
        }
        relative_position.abs()
    } else {
        -relative_position.min(0)
    };
    let max_exact = num_buckets / 2;
    if n < max_exact {
        ret += n;
    } else {
        let log_ratio = ((n as f32) / (max_exact as f32)).ln()
            / ((max_distance as f64 / max_exact as f64).ln() as f32);
        let large = max_exact + (log_ratio * (num_buckets - max_exact) as f32) as i64;
        ret += large.min(num_buckets - 1);
    }
    ret as usize
}

#[derive(Debug, Clone)]
struct T5Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    relative_attention_bias: Option<Embedding>,
    num_heads: usize,
    d_kv: usize,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
}

impl T5Attention {
    fn new(cfg: &T5Config, has_bias: bool, bidirectional: bool, vb: VarBuilder) -> Result<Self> {
        let inner = cfg.num_heads * cfg.d_kv;
        let relative_attention_bias = if has_bias {
            Some(candle_nn::embedding(
                cfg.relative_attention_num_buckets,
                cfg.num_heads,
                vb.pp("relative_attention_bias"),
            )?)
        } else {
            None
        };
        Ok(Self {
            q: linear(cfg.d_model, inner, false, vb.pp("q"))?,
            k: linear(cfg.d_model, inner, false, vb.pp("k"))?,
            v: linear(cfg.d_model, inner, false, vb.pp("v"))?,
            o: linear(inner, cfg.d_model, false, vb.pp("o"))?,
            relative_attention_bias,
            num_heads: cfg.num_heads,
            d_kv: cfg.d_kv,
            bidirectional,
            num_buckets: cfg.relative_attention_num_buckets,
            max_distance: cfg.relative_attention_max_distance,
        })
    }

    /// Relative position bias for queries at `offset..offset+q_len` over keys `0..k_len`.
    // -> [1, heads, q_len, k_len]
    fn compute_bias(
        &self,
        q_len: usize,
        k_len: usize,
        offset: usize,
        dev: &Device,
    ) -> Result<Tensor> {
        let emb = match &self.relative_attention_bias {
            Some(e) => e,
            None => candle_core::bail!("T5 layer without relative_attention_bias asked for a bias"),
        };
        let mut buckets = Vec::with_capacity(q_len * k_len);
        for i in 0..q_len {
            for j in 0..k_len {
                let rel = j as i64 - (offset + i) as i64;
                buckets.push(relative_position_bucket(
                    rel,
                    self.bidirectional,
                    self.num_buckets,
                    self.max_distance,
                ) as u32);
            }
        }
        let buckets = Tensor::from_vec(buckets, (q_len, k_len), dev)?;
        emb.forward(&buckets)?.permute((2, 0, 1))?.unsqueeze(0)
    }

    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        x.reshape((b, t, self.num_heads, self.d_kv))?.transpose(1, 2)?.contiguous()
    }

    /// Self-attention (`kv_input` None; keys appended to `past`) or cross-attention
    /// (`kv_input` = encoder states, or `past` = their cached projections). No score scaling (T5).
    // x: [B, T, D], bias: [B|1, h, T, S] -> ([B, T, D], keys/values [B, h, S, d])
    fn forward(
        &self,
        x: &Tensor,
        kv_input: Option<&Tensor>,
        bias: &Tensor,
        past: Option<&(Tensor, Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let (b, t, _) = x.dims3()?;
        let q = self.split_heads(&self.q.forward(x)?)?;
        let (k, v) = match (kv_input, past) {
            (Some(enc), None) => {
                (self.split_heads(&self.k.forward(enc)?)?, self.split_heads(&self.v.forward(enc)?)?)
            }
            (Some(_), Some(kv)) => kv.clone(),
            (None, past) => append(
                past,
                self.split_heads(&self.k.forward(x)?)?,
                self.split_heads(&self.v.forward(x)?)?,
            )?,
        };
        let scores = q.matmul(&k.t()?)?.broadcast_add(bias)?;
        let probs = softmax(&scores)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, self.num_heads * self.d_kv))?;
        Ok((self.o.forward(&ctx)?, (k, v)))
    }
}

#[derive(Debug, Clone)]
enum T5Ffn {
    Dense { wi: Linear, wo: Linear },
    Gated { wi_0: Linear, wi_1: Linear, wo: Linear },
}

#[derive(Debug, Clone)]
struct T5FfnLayer {
    ffn: T5Ffn,
    act: Activation,
    layer_norm: RmsNorm,
}

impl T5FfnLayer {
    fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        let act = cfg.activation().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let d = vb.pp("DenseReluDense");
        let ffn = if cfg.is_gated() {
            T5Ffn::Gated {
                wi_0: linear(cfg.d_model, cfg.d_ff, false, d.pp("wi_0"))?,
                wi_1: linear(cfg.d_model, cfg.d_ff, false, d.pp("wi_1"))?,
                wo: linear(cfg.d_ff, cfg.d_model, false, d.pp("wo"))?,
            }
        } else {
            T5Ffn::Dense {
                wi: linear(cfg.d_model, cfg.d_ff, false, d.pp("wi"))?,
                wo: linear(cfg.d_ff, cfg.d_model, false, d.pp("wo"))?,
            }
        };
        let layer_norm = RmsNorm::new(cfg.d_model, cfg.layer_norm_epsilon, vb.pp("layer_norm"))?;
        Ok(Self { ffn, act, layer_norm })
    }

    // x: [B, T, D] -> [B, T, D]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.layer_norm.forward(x)?;
        let h = match &self.ffn {
            T5Ffn::Dense { wi, wo } => wo.forward(&self.act.apply(&wi.forward(&h)?)?)?,
            T5Ffn::Gated { wi_0, wi_1, wo } => {
                let gate = self.act.apply(&wi_0.forward(&h)?)?;
                wo.forward(&(gate * wi_1.forward(&h)?)?)?
            }
        };
        x + h
    }
}

#[derive(Debug, Clone)]
struct T5Block {
    self_attn: T5Attention,
    self_attn_norm: RmsNorm,
    cross_attn: Option<(T5Attention, RmsNorm)>,
    ffn: T5FfnLayer,
}

impl T5Block {
    fn new(cfg: &T5Config, first: bool, decoder: bool, vb: VarBuilder) -> Result<Self> {
        let l = vb.pp("layer");
        let eps = cfg.layer_norm_epsilon;
        let self_attn = T5Attention::new(cfg, first, !decoder, l.pp(0).pp("SelfAttention"))?;
        let self_attn_norm = RmsNorm::new(cfg.d_model, eps, l.pp(0).pp("layer_norm"))?;
        let (cross_attn, ffn_idx) = if decoder {
            let a = T5Attention::new(cfg, false, false, l.pp(1).pp("EncDecAttention"))?;
            let n = RmsNorm::new(cfg.d_model, eps, l.pp(1).pp("layer_norm"))?;
            (Some((a, n)), 2)
        } else {
            (None, 1)
        };
        let ffn = T5FfnLayer::new(cfg, l.pp(ffn_idx))?;
        Ok(Self { self_attn, self_attn_norm, cross_attn, ffn })
    }
}

/// Decoder caches: self-attention keys/values grow per step; cross-attention ones are computed
/// once from the encoder output.
#[derive(Debug, Clone, Default)]
pub struct T5Cache {
    pub self_attn: KvCache,
    pub cross_attn: KvCache,
}

impl T5Cache {
    pub fn index_select(&self, idx: &Tensor) -> Result<Self> {
        Ok(Self {
            self_attn: self.self_attn.index_select(idx)?,
            cross_attn: self.cross_attn.index_select(idx)?,
        })
    }
}

/// `T5ForConditionalGeneration`.
#[derive(Debug, Clone)]
pub struct T5ForConditionalGeneration {
    shared: Embedding,
    encoder: Vec<T5Block>,
    encoder_norm: RmsNorm,
    decoder: Vec<T5Block>,
    decoder_norm: RmsNorm,
    lm_head: Option<Linear>,
    cfg: T5Config,
}

impl T5ForConditionalGeneration {
    /// `vb` points at the `T5ForConditionalGeneration` root (`language_model` in BLIP-2).
    pub fn load(vb: VarBuilder, cfg: &T5Config) -> crate::Result<Self> {
        cfg.validate()?;
        let shared = candle_nn::embedding(cfg.vocab_size, cfg.d_model, vb.pp("shared"))?;
        let eps = cfg.layer_norm_epsilon;
        let enc = vb.pp("encoder");
        let encoder = (0..cfg.num_layers)
            .map(|i| T5Block::new(cfg, i == 0, false, enc.pp("block").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let encoder_norm = RmsNorm::new(cfg.d_model, eps, enc.pp("final_layer_norm"))?;
        let dec = vb.pp("decoder");
        let decoder = (0..cfg.num_decoder_layers())
            .map(|i| T5Block::new(cfg, i == 0, true, dec.pp("block").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let decoder_norm = RmsNorm::new(cfg.d_model, eps, dec.pp("final_layer_norm"))?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(linear(cfg.d_model, cfg.vocab_size, false, vb.pp("lm_head"))?)
        };
        Ok(Self { shared, encoder, encoder_norm, decoder, decoder_norm, lm_head, cfg: cfg.clone() })
    }

    pub fn config(&self) -> &T5Config {
        &self.cfg
    }

    /// Token embeddings of the shared table. ids: [B, T] -> [B, T, D]
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.shared.forward(ids)
    }

    pub fn dtype(&self) -> DType {
        self.shared.embeddings().dtype()
    }

    // inputs_embeds: [B, S, D], attention_mask: [B, S] -> [B, S, D]
    pub fn encode(&self, inputs_embeds: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (b, s, _) = inputs_embeds.dims3()?;
        let rows = mask_rows(attention_mask)?;
        if rows.len() != b || rows.iter().any(|r| r.len() != s) {
            candle_core::bail!(
                "T5 encoder attention_mask is {:?}, expected [{b}, {s}]",
                attention_mask.dims()
            );
        }
        let dev = inputs_embeds.device();
        let dtype = inputs_embeds.dtype();
        let mask = padding_mask(&rows, dev)?.to_dtype(dtype)?;
        // The first block's bias (plus the mask) is shared by every block, as in HF.
        let bias = self.encoder[0].self_attn.compute_bias(s, s, 0, dev)?.to_dtype(dtype)?;
        let bias = bias.broadcast_add(&mask)?;
        let mut x = inputs_embeds.clone();
        for block in &self.encoder {
            let h = block.self_attn_norm.forward(&x)?;
            let (h, _) = block.self_attn.forward(&h, None, &bias, None)?;
            x = (x + h)?;
            x = block.ffn.forward(&x)?;
        }
        self.encoder_norm.forward(&x)
    }

    /// Decoder logits for `decoder_input_ids` following the cached positions.
    /// `decoder_attention_mask` covers cached + new positions (None = all ones).
    // ids: [B, T], encoder_hidden: [B, S, D], encoder_mask: [B, S] -> (logits [B, T, V], cache)
    pub fn decode(
        &self,
        decoder_input_ids: &Tensor,
        decoder_attention_mask: Option<&Tensor>,
        encoder_hidden: &Tensor,
        encoder_mask: &Tensor,
        cache: Option<T5Cache>,
    ) -> Result<(Tensor, T5Cache)> {
        let x = self.shared.forward(decoder_input_ids)?;
        self.decode_embeds(&x, decoder_attention_mask, encoder_hidden, encoder_mask, cache)
    }

    // x: [B, T, D] -> (logits [B, T, V], cache)
    pub fn decode_embeds(
        &self,
        x: &Tensor,
        decoder_attention_mask: Option<&Tensor>,
        encoder_hidden: &Tensor,
        encoder_mask: &Tensor,
        cache: Option<T5Cache>,
    ) -> Result<(Tensor, T5Cache)> {
        let (b, t, _) = x.dims3()?;
        let dev = x.device();
        let dtype = x.dtype();
        let mut cache = cache.unwrap_or_else(|| T5Cache {
            self_attn: KvCache::new(self.decoder.len()),
            cross_attn: KvCache::new(self.decoder.len()),
        });
        let past = cache.self_attn.seq_len();
        let rows = match decoder_attention_mask {
            Some(m) => mask_rows(m)?,
            None => vec![vec![true; past + t]; b],
        };
        if rows.len() != b || rows.iter().any(|r| r.len() != past + t) {
            candle_core::bail!("T5 decoder attention_mask must be [{b}, {}]", past + t);
        }
        let self_mask = causal_padding_mask(&rows, t, dev)?.to_dtype(dtype)?;
        let self_bias = self.decoder[0]
            .self_attn
            .compute_bias(t, past + t, past, dev)?
            .to_dtype(dtype)?
            .broadcast_add(&self_mask)?;
        let enc_rows = mask_rows(encoder_mask)?;
        let cross_bias = padding_mask(&enc_rows, dev)?.to_dtype(dtype)?;
        let mut x = x.clone();
        for (i, block) in self.decoder.iter().enumerate() {
            let h = block.self_attn_norm.forward(&x)?;
            let (h, (k, v)) =
                block.self_attn.forward(&h, None, &self_bias, cache.self_attn.layer(i))?;
            cache.self_attn.set_layer(i, k, v);
            x = (x + h)?;
            if let Some((attn, norm)) = &block.cross_attn {
                let h = norm.forward(&x)?;
                let (h, (k, v)) =
                    attn.forward(&h, Some(encoder_hidden), &cross_bias, cache.cross_attn.layer(i))?;
                cache.cross_attn.set_layer(i, k, v);
                x = (x + h)?;
            }
            x = block.ffn.forward(&x)?;
        }
        let mut x = self.decoder_norm.forward(&x)?;
        let logits = match &self.lm_head {
            Some(head) => head.forward(&x)?,
            None => {
                // Tied head: HF rescales by d_model^-0.5 (mesh-tensorflow convention).
                x = (x * (self.cfg.d_model as f64).powf(-0.5))?;
                crate::nn::Linear::new(self.shared.embeddings().clone(), None).forward(&x)?
            }
        };
        Ok((logits, cache))
    }

    /// HF `_shift_right`: prepend the decoder start token, drop the last label, -100 -> pad.
    pub fn shift_right(&self, labels: &[Vec<i64>]) -> Vec<Vec<u32>> {
        labels
            .iter()
            .map(|row| {
                std::iter::once(self.cfg.decoder_start_token_id)
                    .chain(row.iter().take(row.len().saturating_sub(1)).map(|&l| {
                        if l < 0 {
                            self.cfg.pad_token_id
                        } else {
                            l as u32
                        }
                    }))
                    .collect()
            })
            .collect()
    }

    /// Full teacher-forced pass.
    // inputs_embeds: [B, S, D], ids: [B, T] -> logits [B, T, V]
    pub fn forward(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &Tensor,
        decoder_input_ids: &Tensor,
        decoder_attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let enc = self.encode(inputs_embeds, attention_mask)?;
        let (logits, _) =
            self.decode(decoder_input_ids, decoder_attention_mask, &enc, attention_mask, None)?;
        Ok(logits)
    }
}
