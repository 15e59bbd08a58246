//! The Q-Former: a BERT encoder whose first positions are learned queries that cross-attend
//! the image, with a separate FFN for query and text positions.
//!
//! References: LAVIS `lavis/models/blip2_models/Qformer.py` (BertEmbeddings, BertLayer with
//! `has_query`), transformers 4.57 `Blip2TextEmbeddings`, `Blip2QFormerModel`, `Blip2QFormerLayer`.
//! Field and `vb.pp` names follow HF, so checkpoint keys map one to one. Everything here is
//! differentiable (qformer::nn softmax/LayerNorm, candle Linear/Embedding, gelu_erf).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::image_rows::ImageRows;
use crate::config::QFormerConfig;
use crate::masks::AdditiveMask;
use crate::nn::{dropout, gelu, masked_softmax, softmax, LayerNorm, Linear};

/// Self-attention keys and values of the query positions, one `(K, V)` per layer, each
/// `[B, heads, Q, head_dim]`. The ITC image pass produces it; the ITG text pass attends to it
/// (LAVIS `past_key_values`). Not detached: ITG gradients reach the query path through it.
#[derive(Debug, Clone)]
pub struct QueryKv {
    pub layers: Vec<(Tensor, Tensor)>,
}

impl QueryKv {
    pub fn num_queries(&self) -> Result<usize> {
        match self.layers.first() {
            Some((k, _)) => k.dim(2),
            None => Ok(0),
        }
    }

    /// Batch rows picked by index (e.g. to pair cached queries with other texts).
    pub fn index_select(&self, idx: &Tensor) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| Ok((k.index_select(idx, 0)?, v.index_select(idx, 0)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }
}

/// One Q-Former pass. The sequence is `[query_embeds; embed(input_ids)]`; either part may be absent.
#[derive(Debug, Clone, Copy)]
pub struct QFormerInput<'a> {
    /// `[B, Q, H]` learned queries (already expanded to the batch).
    pub query_embeds: Option<&'a Tensor>,
    /// `[B, L]` token ids (u32/i64); positions start at 0 whether or not queries come first.
    pub input_ids: Option<&'a Tensor>,
    /// Self-attention mask whose rows are this pass's positions and whose keys are
    /// `[past queries; this pass's positions]`.
    pub self_mask: &'a AdditiveMask,
    /// `[B, N, Dv]` vision features after `ln_vision`; needed when queries are present.
    /// With `image_rows`, `[U, N, Dv]`: the distinct images of the batch.
    pub image_embeds: Option<&'a Tensor>,
    /// The `image_embeds` row each batch row reads. Batch rows that share an image then share
    /// its cross-attention keys/values, projected once and read in place (ITM over hard
    /// negatives or re-ranking, where one image meets many texts). `None`: row b reads image b.
    pub image_rows: Option<&'a ImageRows>,
    /// Cached query K/V from an earlier image pass (ITG); then `query_embeds` must be `None`.
    pub past_query_kv: Option<&'a QueryKv>,
}

#[derive(Debug, Clone)]
pub struct QFormerOutput {
    /// `[B, Q + L, H]` (Q = 0 when no queries were in the pass).
    pub hidden_states: Tensor,
    pub num_queries: usize,
    /// Per-layer self-attention K/V of this pass's query positions (`None` without queries).
    pub query_kv: Option<QueryKv>,
}

impl QFormerOutput {
    /// `[B, Q, H]`
    pub fn query_output(&self) -> Result<Tensor> {
        self.hidden_states.narrow(1, 0, self.num_queries)
    }
    /// `[B, L, H]`
    pub fn text_output(&self) -> Result<Tensor> {
        let t = self.hidden_states.dim(1)?;
        self.hidden_states.narrow(1, self.num_queries, t - self.num_queries)
    }
}

/// Word + absolute position embeddings for text (HF top-level `embeddings.*`, LAVIS
/// `Qformer.bert.embeddings.{word,position}_embeddings`). No LayerNorm here: that is
/// `QFormer::layernorm`, applied to the whole `[queries; text]` sequence.
#[derive(Debug, Clone)]
pub struct TextEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Tensor,
}

impl TextEmbeddings {
    pub fn new(cfg: &QFormerConfig, vb: VarBuilder) -> Result<Self> {
        let word_embeddings =
            candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, vb.pp("word_embeddings"))?;
        let position_embeddings = vb.get_with_hints(
            (cfg.max_position_embeddings, cfg.hidden_size),
            "position_embeddings.weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        Ok(Self { word_embeddings, position_embeddings })
    }

    /// `[vocab, H]`, tied to the LM head decoder.
    pub fn word_embeddings(&self) -> &Tensor {
        self.word_embeddings.embeddings()
    }

    // input_ids: [B, L] -> [B, L, H]
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let l = input_ids.dim(1)?;
        let max = self.position_embeddings.dim(0)?;
        if l > max {
            candle_core::bail!("text length {l} exceeds max_position_embeddings {max}")
        }
        let words = self.word_embeddings.forward(input_ids)?;
        words.broadcast_add(&self.position_embeddings.narrow(0, 0, l)?)
    }
}

/// Multi-head attention + BERT output block (dense -> dropout -> LayerNorm(x + residual)).
#[derive(Debug, Clone)]
struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    dense: Linear,
    layer_norm: LayerNorm,
    num_heads: usize,
    head_dim: usize,
    attention_dropout: f64,
    hidden_dropout: f64,
}

struct AttentionOutput {
    hidden: Tensor,
    /// This pass's own keys/values `[B, heads, T, hd]` (without the past).
    key: Tensor,
    value: Tensor,
}

impl Attention {
    fn new(cfg: &QFormerConfig, kv_dim: usize, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let att = vb.pp("attention");
        let out = vb.pp("output");
        Ok(Self {
            query: crate::nn::linear_gemm_layout(h, h, true, att.pp("query"))?,
            key: crate::nn::linear_gemm_layout(kv_dim, h, true, att.pp("key"))?,
            value: crate::nn::linear_gemm_layout(kv_dim, h, true, att.pp("value"))?,
            dense: crate::nn::linear_gemm_layout(h, h, true, out.pp("dense"))?,
            layer_norm: LayerNorm::new(h, cfg.layer_norm_eps, out.pp("LayerNorm"))?,
            num_heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            attention_dropout: cfg.attention_probs_dropout_prob,
            hidden_dropout: cfg.hidden_dropout_prob,
        })
    }

    // x: [B, T, H], kv_input: [B, S, Dkv] (or [U, S, Dkv] with kv_rows for B rows),
    // mask: [B, 1, T, P+S] -> hidden [B, T, H]
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        kv_input: &Tensor,
        kv_rows: Option<&ImageRows>,
        mask: Option<&Tensor>,
        past: Option<&(Tensor, Tensor)>,
        train: bool,
        rng: &mut ChaCha8Rng,
    ) -> Result<AttentionOutput> {
        let (b, t, h) = x.dims3()?;
        // Scaling q (T x hd) instead of the scores (T x S) saves a pass over the larger tensor.
        // The projections apply the scale and write the head-split layout themselves, so no
        // unscaled or unsplit copy is kept alive in the graph.
        let heads = self.num_heads;
        let q = self.query.forward_heads(x, heads, 1.0 / (self.head_dim as f64).sqrt())?;
        let key = self.key.forward_heads(kv_input, heads, 1.0)?;
        let value = self.value.forward_heads(kv_input, heads, 1.0)?;
        let ctx = match kv_rows {
            // Each distinct source is projected once; rows read its K/V in place where they can.
            Some(rows) => {
                if mask.is_some() || past.is_some() {
                    candle_core::bail!(
                        "shared image rows are for cross-attention (no mask, no past)"
                    )
                }
                rows.attend(&q, &key, &value, |q, k, v| self.context(q, k, v, None, train, rng))?
            }
            None => match past {
                Some((pk, pv)) => {
                    let k_all = Tensor::cat(&[pk, &key], 2)?;
                    let v_all = Tensor::cat(&[pv, &value], 2)?;
                    self.context(&q, &k_all, &v_all, mask, train, rng)?
                }
                None => self.context(&q, &key, &value, mask, train, rng)?,
            },
        };
        let ctx = ctx.transpose(1, 2)?.reshape((b, t, h))?;
        let projected = dropout(&self.dense.forward(&ctx)?, self.hidden_dropout, train, rng)?;
        let hidden = self.layer_norm.forward(&(projected + x)?)?;
        Ok(AttentionOutput { hidden, key, value })
    }

    /// Attention probabilities (masked, dropped out) times values.
    // q: [B, h, T, d], k/v: [B, h, P+S, d], mask: [B, 1, T, P+S] -> [B, h, T, d]
    fn context(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        train: bool,
        rng: &mut ChaCha8Rng,
    ) -> Result<Tensor> {
        let scores = q.matmul(&k.t()?)?;
        let probs = match mask {
            Some(m) => {
                let (mt, mk) = (m.dim(2)?, m.dim(3)?);
                let (sb, st, sk) = (scores.dim(0)?, scores.dim(2)?, scores.dim(3)?);
                if (mt, mk) != (st, sk) || m.dim(0)? != sb {
                    candle_core::bail!(
                        "attention mask {:?} does not fit {sb} x {st} rows x {sk} keys",
                        m.dims()
                    )
                }
                masked_softmax(&scores, &m.to_dtype(scores.dtype())?)?
            }
            None => softmax(&scores)?,
        };
        dropout(&probs, self.attention_dropout, train, rng)?.matmul(v)
    }
}

/// BERT FFN: intermediate (GELU) -> output dense -> dropout -> LayerNorm(x + residual).
#[derive(Debug, Clone)]
struct FeedForward {
    intermediate: Linear,
    output: Linear,
    layer_norm: LayerNorm,
    hidden_dropout: f64,
}

impl FeedForward {
    /// `intermediate` / `output` are the HF/LAVIS prefixes (`intermediate_query` for queries).
    fn new(cfg: &QFormerConfig, vb: &VarBuilder, intermediate: &str, output: &str) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            intermediate: crate::nn::linear_gemm_layout(
                h,
                i,
                true,
                vb.pp(intermediate).pp("dense"),
            )?,
            output: crate::nn::linear_gemm_layout(i, h, true, vb.pp(output).pp("dense"))?,
            layer_norm: LayerNorm::new(h, cfg.layer_norm_eps, vb.pp(output).pp("LayerNorm"))?,
            hidden_dropout: cfg.hidden_dropout_prob,
        })
    }

    // x: [B, T, H] -> [B, T, H]
    fn forward(&self, x: &Tensor, train: bool, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let inner = gelu(&self.intermediate.forward(x)?)?;
        let out = dropout(&self.output.forward(&inner)?, self.hidden_dropout, train, rng)?;
        self.layer_norm.forward(&(out + x)?)
    }
}

#[derive(Debug, Clone)]
struct QFormerLayer {
    attention: Attention,
    crossattention: Option<Attention>,
    query_ffn: FeedForward,
    text_ffn: Option<FeedForward>,
    index: usize,
}

impl QFormerLayer {
    fn new(cfg: &QFormerConfig, index: usize, vb: VarBuilder) -> Result<Self> {
        let crossattention = if cfg.has_cross_attention(index) {
            Some(Attention::new(cfg, cfg.encoder_hidden_size, vb.pp("crossattention"))?)
        } else {
            None
        };
        let text_ffn = if cfg.use_qformer_text_input {
            Some(FeedForward::new(cfg, &vb, "intermediate", "output")?)
        } else {
            None
        };
        Ok(Self {
            attention: Attention::new(cfg, cfg.hidden_size, vb.pp("attention"))?,
            crossattention,
            query_ffn: FeedForward::new(cfg, &vb, "intermediate_query", "output_query")?,
            text_ffn,
            index,
        })
    }

    fn text_ffn(&self) -> Result<&FeedForward> {
        self.text_ffn.as_ref().ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "Q-Former layer {} has no text FFN (checkpoint without text input, use_qformer_text_input=false)",
                self.index
            ))
        })
    }

    // h: [B, T, H] with the first `num_q` positions being queries -> ([B, T, H], this pass's (K, V))
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        h: &Tensor,
        num_q: usize,
        mask: &Tensor,
        image_embeds: Option<&Tensor>,
        image_rows: Option<&ImageRows>,
        past: Option<&(Tensor, Tensor)>,
        train: bool,
        rng: &mut ChaCha8Rng,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let att = self.attention.forward(h, h, None, Some(mask), past, train, rng)?;
        let a = att.hidden;
        let t = a.dim(1)?;
        let out = if num_q > 0 {
            // Contiguous halves, so their projections fold into single GEMMs.
            let mut aq = if t > num_q { a.narrow(1, 0, num_q)?.contiguous()? } else { a.clone() };
            if let Some(cross) = &self.crossattention {
                let image = image_embeds.ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "Q-Former layer {} needs image_embeds for its queries",
                        self.index
                    ))
                })?;
                // The image mask is all ones in BLIP-2, so no additive mask.
                aq = cross.forward(&aq, image, image_rows, None, None, train, rng)?.hidden;
            }
            let query_part = self.query_ffn.forward(&aq, train, rng)?;
            if t > num_q {
                let text = a.narrow(1, num_q, t - num_q)?.contiguous()?;
                let text_part = self.text_ffn()?.forward(&text, train, rng)?;
                Tensor::cat(&[&query_part, &text_part], 1)?
            } else {
                query_part
            }
        } else {
            self.text_ffn()?.forward(&a, train, rng)?
        };
        Ok((out, att.key, att.value))
    }
}

#[derive(Debug, Clone)]
pub struct QFormer {
    /// Absent for `Blip2ForConditionalGeneration` checkpoints (no text input).
    embeddings: Option<TextEmbeddings>,
    layernorm: LayerNorm,
    layers: Vec<QFormerLayer>,
    embedding_dropout: f64,
    cfg: QFormerConfig,
}

impl QFormer {
    /// `vb` is the checkpoint root: the encoder lives under `qformer.*`, the text embeddings
    /// (when `use_qformer_text_input`) under `embeddings.*`, as in HF.
    pub fn new(cfg: &QFormerConfig, vb: VarBuilder) -> Result<Self> {
        let embeddings = if cfg.use_qformer_text_input {
            Some(TextEmbeddings::new(cfg, vb.pp("embeddings"))?)
        } else {
            None
        };
        let q = vb.pp("qformer");
        let layernorm = LayerNorm::new(cfg.hidden_size, cfg.layer_norm_eps, q.pp("layernorm"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| QFormerLayer::new(cfg, i, q.pp(format!("encoder.layer.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings,
            layernorm,
            layers,
            embedding_dropout: cfg.hidden_dropout_prob,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &QFormerConfig {
        &self.cfg
    }

    pub fn embeddings(&self) -> Option<&TextEmbeddings> {
        self.embeddings.as_ref()
    }

    /// Inference pass (no dropout).
    pub fn forward_eval(&self, inp: &QFormerInput) -> Result<QFormerOutput> {
        self.forward(inp, false, &mut ChaCha8Rng::seed_from_u64(0))
    }

    // query_embeds [B, Q, H] and/or input_ids [B, L] -> hidden_states [B, Q + L, H]
    pub fn forward(
        &self,
        inp: &QFormerInput,
        train: bool,
        rng: &mut ChaCha8Rng,
    ) -> Result<QFormerOutput> {
        if inp.past_query_kv.is_some() && inp.query_embeds.is_some() {
            candle_core::bail!("Q-Former pass with both query_embeds and cached query K/V")
        }
        let text = match inp.input_ids {
            Some(ids) => {
                let emb = self.embeddings.as_ref().ok_or_else(|| {
                    candle_core::Error::Msg(
                        "this Q-Former has no text embeddings (use_qformer_text_input=false)"
                            .into(),
                    )
                })?;
                Some(emb.forward(ids)?)
            }
            None => None,
        };
        let x = match (inp.query_embeds, &text) {
            (Some(q), Some(t)) => Tensor::cat(&[q, t], 1)?,
            (Some(q), None) => q.clone(),
            (None, Some(t)) => t.clone(),
            (None, None) => candle_core::bail!("Q-Former pass with neither queries nor text"),
        };
        let num_q = inp.query_embeds.map_or(Ok(0), |q| q.dim(1))?;
        let past_q = match inp.past_query_kv {
            Some(p) => {
                if p.layers.len() != self.layers.len() {
                    candle_core::bail!(
                        "cached query K/V has {} layers, the Q-Former {}",
                        p.layers.len(),
                        self.layers.len()
                    )
                }
                p.num_queries()?
            }
            None => 0,
        };
        let m = inp.self_mask;
        let rows = x.dim(1)?;
        let expected_rows =
            if m.has_query_rows() { m.num_queries() + m.text_len() } else { m.text_len() };
        if expected_rows != rows || m.num_queries() != num_q + past_q {
            candle_core::bail!(
                "self-attention mask is for {} queries + {} text tokens, the pass has {} queries + {} text tokens",
                m.num_queries(),
                m.text_len(),
                num_q + past_q,
                rows - num_q
            )
        }
        let mut h = dropout(&self.layernorm.forward(&x)?, self.embedding_dropout, train, rng)?;
        let mut query_kv = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let past = inp.past_query_kv.map(|p| &p.layers[i]);
            let (out, k, v) = layer.forward(
                &h,
                num_q,
                m.tensor(),
                inp.image_embeds,
                inp.image_rows,
                past,
                train,
                rng,
            )?;
            if num_q > 0 {
                query_kv.push((k.narrow(2, 0, num_q)?, v.narrow(2, 0, num_q)?));
            }
            h = out;
        }
        let query_kv = if num_q > 0 { Some(QueryKv { layers: query_kv }) } else { None };
        Ok(QFormerOutput { hidden_states: h, num_queries: num_q, query_kv })
    }
}
