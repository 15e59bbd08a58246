//! BLIP-2 stage two: `language_projection` + frozen LLM, input assembly and the LM losses.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use rand::Rng;

use super::config::{Blip2LlmConfig, TextConfig};
use super::llama::LlamaForCausalLm;
use super::loss::{causal_lm_loss, prefix_lm_split, seq2seq_loss, IGNORE_INDEX};
use super::opt::OptForCausalLm;
use super::t5::T5ForConditionalGeneration;
use crate::nn::{linear, Linear};

/// `language_projection` (LAVIS `opt_proj` / `t5_proj`): Q-Former width -> LLM width.
#[derive(Debug, Clone)]
pub struct LanguageProjection {
    proj: Linear,
}

impl LanguageProjection {
    pub fn new(qformer_hidden: usize, llm_hidden: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self { proj: linear(qformer_hidden, llm_hidden, true, vb)? })
    }
}

impl Module for LanguageProjection {
    // query_output: [B, Q, Hq] -> [B, Q, D]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.proj.forward(x)
    }
}

/// The LLM of a BLIP-2 checkpoint.
#[derive(Debug, Clone)]
pub enum LanguageModel {
    Opt(OptForCausalLm),
    T5(T5ForConditionalGeneration),
    Llama(LlamaForCausalLm),
}

impl LanguageModel {
    /// `vb` points at `language_model`.
    pub fn load(vb: VarBuilder, cfg: &TextConfig) -> crate::Result<Self> {
        Ok(match cfg {
            TextConfig::Opt(c) => Self::Opt(OptForCausalLm::load(vb, c)?),
            TextConfig::T5(c) => Self::T5(T5ForConditionalGeneration::load(vb, c)?),
            TextConfig::Llama(c) => Self::Llama(LlamaForCausalLm::load(vb, c)?),
        })
    }

    /// Input token embeddings. ids: [B, T] -> [B, T, D]
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Self::Opt(m) => m.embed(ids),
            Self::T5(m) => m.embed(ids),
            Self::Llama(m) => m.embed(ids),
        }
    }

    pub fn pad_token_id(&self) -> u32 {
        match self {
            Self::Opt(m) => m.config().pad_token_id,
            Self::T5(m) => m.config().pad_token_id,
            // LLaMA checkpoints often have no pad id; padded positions are masked anyway.
            Self::Llama(m) => m
                .config()
                .pad_token_id
                .as_ref()
                .and_then(|p| p.to_vec().first().copied())
                .unwrap_or(0),
        }
    }
}

/// Which side of a batch gets the padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingSide {
    /// Generation with a decoder-only LLM (HF/LAVIS pad OPT prompts on the left).
    Left,
    Right,
}

/// Pad token rows to the longest; returns (ids [B, L], mask [B, L]) as u32 tensors.
pub fn pad_batch(
    rows: &[Vec<u32>],
    pad_id: u32,
    side: PaddingSide,
    device: &candle_core::Device,
) -> Result<(Tensor, Tensor)> {
    let b = rows.len();
    let l = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(b * l);
    let mut mask = Vec::with_capacity(b * l);
    for r in rows {
        let pad = l - r.len();
        let (pre, post) = if side == PaddingSide::Left { (pad, 0) } else { (0, pad) };
        ids.extend(std::iter::repeat_n(pad_id, pre).chain(r.iter().copied()));
        ids.extend(std::iter::repeat_n(pad_id, post));
        mask.extend(std::iter::repeat_n(0u32, pre).chain(std::iter::repeat_n(1u32, r.len())));
        mask.extend(std::iter::repeat_n(0u32, post));
    }
    Ok((Tensor::from_vec(ids, (b, l), device)?, Tensor::from_vec(mask, (b, l), device)?))
}

/// Projected queries in front of text embeddings, mask ones for the queries.
// queries: [B, Q, D], text: [B, T, D], mask: [B, T] -> (embeds [B, Q+T, D], mask [B, Q+T])
fn prepend_queries(queries: &Tensor, text: &Tensor, mask: &Tensor) -> Result<(Tensor, Tensor)> {
    let (b, q, _) = queries.dims3()?;
    let text = text.to_dtype(queries.dtype())?;
    let embeds = Tensor::cat(&[queries, &text], 1)?;
    let qmask = Tensor::ones((b, q), mask.dtype(), mask.device())?;
    Ok((embeds, Tensor::cat(&[&qmask, mask], 1)?))
}

/// Decoder-only LM labels over `[queries; right-padded texts]`: -100 on the `q` queries, on
/// the first `prompt_lens[i]` tokens of each text and on padding; the text ids elsewhere.
fn decoder_lm_labels(
    texts: &[Vec<u32>],
    prompt_lens: &[usize],
    q: usize,
    l: usize,
) -> Vec<Vec<i64>> {
    texts
        .iter()
        .zip(prompt_lens)
        .map(|(t, &p)| {
            let mut row = vec![IGNORE_INDEX; q + l];
            for (i, &tok) in t.iter().enumerate().skip(p) {
                row[q + i] = tok as i64;
            }
            row
        })
        .collect()
}

/// LLaMA / Vicuna stage-two LM loss (LAVIS `blip2_vicuna_instruct.forward`, the LLaMA
/// counterpart of [`Blip2Llm::opt_lm_loss`]): `language_projection` of the queries in front of
/// the right-padded `texts`, labels -100 on queries, prompt and padding, HF's shifted mean CE.
/// `texts`: per row `<s>` + prompt + output + `</s>` ids, unpadded — the LLaMA tokenizer adds the
/// `<s>` BOS to the prompt (LAVIS tokenizes the prompt with special tokens, the output without,
/// then appends `</s>`), so every row must start with the config's `bos_token_id` when it has
/// one; `prompt_lens`: tokens of `<s>` + prompt per row (at least 1), which take no loss.
/// Padding uses the config's `pad_token_id` (else 0); padded positions are masked and unlabelled,
/// so the id does not matter (LAVIS's added `[PAD]` row changes nothing).
// query_output: [B, Q, Hq] -> scalar
pub fn llama_lm_loss(
    projection: &LanguageProjection,
    llama: &LlamaForCausalLm,
    query_output: &Tensor,
    texts: &[Vec<u32>],
    prompt_lens: &[usize],
) -> Result<Tensor> {
    if texts.len() != prompt_lens.len() {
        candle_core::bail!(
            "llama_lm_loss: {} texts but {} prompt lengths",
            texts.len(),
            prompt_lens.len()
        );
    }
    let cfg = llama.config();
    let bos = cfg.bos_token_id.as_ref().map(|b| b.to_vec());
    for (i, (t, &p)) in texts.iter().zip(prompt_lens).enumerate() {
        if let Some(bos) = &bos {
            if !t.first().is_some_and(|x| bos.contains(x)) {
                candle_core::bail!(
                    "llama_lm_loss: text {i} does not start with the BOS {bos:?} (the LLaMA \
                     tokenizer's <s>, which LAVIS keeps in front of the prompt)"
                );
            }
        }
        if p == 0 || p > t.len() {
            candle_core::bail!(
                "llama_lm_loss: prompt length {p} of text {i} must cover the BOS and fit its {} \
                 tokens",
                t.len()
            );
        }
    }
    let dev = query_output.device();
    let pad = cfg.pad_token_id.as_ref().and_then(|p| p.to_vec().first().copied()).unwrap_or(0);
    let (ids, mask) = pad_batch(texts, pad, PaddingSide::Right, dev)?;
    let queries = projection.forward(query_output)?;
    let (embeds, full_mask) = prepend_queries(&queries, &llama.embed(&ids)?, &mask)?;
    let labels = decoder_lm_labels(texts, prompt_lens, queries.dim(1)?, ids.dim(1)?);
    let logits = llama.forward_embeds(&embeds, &full_mask)?;
    causal_lm_loss(&logits, &labels)
}

/// `language_projection` + LLM of a `Blip2ForConditionalGeneration` checkpoint.
#[derive(Debug, Clone)]
pub struct Blip2Llm {
    pub projection: LanguageProjection,
    pub language_model: LanguageModel,
    pub config: Blip2LlmConfig,
}

impl Blip2Llm {
    /// `vb` points at the checkpoint root (holding `language_projection.*`, `language_model.*`).
    pub fn load(vb: VarBuilder, config: &Blip2LlmConfig) -> crate::Result<Self> {
        let projection = LanguageProjection::new(
            config.qformer_hidden_size,
            config.llm_hidden_size(),
            vb.pp("language_projection"),
        )?;
        let language_model = LanguageModel::load(vb.pp("language_model"), &config.text)?;
        Ok(Self { projection, language_model, config: config.clone() })
    }

    /// The LLM input: projected queries in front of the token embeddings, mask ones for the
    /// queries. Equal to HF >= 4.47's `<image>`-token masked_scatter (the `<image>` rows are fully
    /// replaced) and to LAVIS's concatenation; with left padding the pads sit between queries and
    /// text (LAVIS layout), which changes nothing since padded keys are masked and positions
    /// come from the mask cumsum.
    // query_output: [B, Q, Hq], ids/mask: [B, T] -> (embeds [B, Q+T, D], mask [B, Q+T])
    pub fn inputs_embeds(
        &self,
        query_output: &Tensor,
        ids: &Tensor,
        mask: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let queries = self.projection.forward(query_output)?;
        prepend_queries(&queries, &self.language_model.embed(ids)?, mask)
    }

    /// Prompted generation input from unpadded prompt ids (OPT / LLaMA: BOS + prompt, left
    /// padded; T5: prompt + `</s>`, right padded).
    // query_output: [B, Q, Hq] -> (embeds [B, Q+L, D], mask [B, Q+L])
    pub fn prompt_inputs(
        &self,
        query_output: &Tensor,
        prompts: &[Vec<u32>],
    ) -> Result<(Tensor, Tensor)> {
        let side = match self.language_model {
            LanguageModel::Opt(_) | LanguageModel::Llama(_) => PaddingSide::Left,
            LanguageModel::T5(_) => PaddingSide::Right,
        };
        let (ids, mask) =
            pad_batch(prompts, self.language_model.pad_token_id(), side, query_output.device())?;
        self.inputs_embeds(query_output, &ids, &mask)
    }

    /// OPT stage-two LM loss (LAVIS `blip2_opt.forward`). `texts`: BOS + prompt + caption + "\n"
    /// ids, unpadded; `prompt_lens`: tokens of BOS + prompt per row, which take no loss. Labels are
    /// -100 on queries, prompt and padding; the loss is HF's shifted mean CE. With a LLaMA
    /// language model the same texts go to [`llama_lm_loss`] (which checks the config's BOS).
    // query_output: [B, Q, Hq] -> scalar
    pub fn opt_lm_loss(
        &self,
        query_output: &Tensor,
        texts: &[Vec<u32>],
        prompt_lens: &[usize],
    ) -> Result<Tensor> {
        let opt = match &self.language_model {
            LanguageModel::Opt(m) => m,
            LanguageModel::Llama(m) => {
                return llama_lm_loss(&self.projection, m, query_output, texts, prompt_lens)
            }
            LanguageModel::T5(_) => candle_core::bail!("opt_lm_loss needs an OPT language model"),
        };
        if texts.len() != prompt_lens.len() {
            candle_core::bail!(
                "opt_lm_loss: {} texts but {} prompt lengths",
                texts.len(),
                prompt_lens.len()
            );
        }
        let dev = query_output.device();
        let pad = opt.config().pad_token_id;
        let (ids, mask) = pad_batch(texts, pad, PaddingSide::Right, dev)?;
        let (embeds, full_mask) = self.inputs_embeds(query_output, &ids, &mask)?;
        let q = query_output.dim(1)?;
        let l = ids.dim(1)?;
        let labels = decoder_lm_labels(texts, prompt_lens, q, l);
        let (logits, _) = opt.forward_embeds(&embeds, &full_mask, None)?;
        causal_lm_loss(&logits, &labels)
    }

    /// FLAN-T5 LM loss (LAVIS `blip2_t5.forward`): encoder input = [queries; `encoder_texts`],
    /// decoder target = `targets`; both already end with `</s>`. Labels pad -> -100.
    // query_output: [B, Q, Hq] -> scalar
    pub fn t5_lm_loss(
        &self,
        query_output: &Tensor,
        encoder_texts: &[Vec<u32>],
        targets: &[Vec<u32>],
    ) -> Result<Tensor> {
        let t5 = match &self.language_model {
            LanguageModel::T5(m) => m,
            LanguageModel::Opt(_) | LanguageModel::Llama(_) => {
                candle_core::bail!("t5_lm_loss needs a T5 language model")
            }
        };
        if encoder_texts.len() != targets.len() {
            candle_core::bail!(
                "t5_lm_loss: {} inputs but {} targets",
                encoder_texts.len(),
                targets.len()
            );
        }
        let dev = query_output.device();
        let pad = t5.config().pad_token_id;
        let (ids, mask) = pad_batch(encoder_texts, pad, PaddingSide::Right, dev)?;
        let (embeds, enc_mask) = self.inputs_embeds(query_output, &ids, &mask)?;
        let t = targets.iter().map(|r| r.len()).max().unwrap_or(0);
        let labels: Vec<Vec<i64>> = targets
            .iter()
            .map(|r| {
                let mut row: Vec<i64> = r.iter().map(|&x| x as i64).collect();
                row.resize(t, IGNORE_INDEX);
                row
            })
            .collect();
        let dec_ids = t5.shift_right(&labels);
        let b = dec_ids.len();
        let dec_ids = Tensor::from_vec(dec_ids.concat(), (b, t), dev)?;
        let (_, dec_mask) = pad_batch(targets, pad, PaddingSide::Right, dev)?;
        let logits = t5.forward(&embeds, &enc_mask, &dec_ids, Some(&dec_mask))?;
        seq2seq_loss(&logits, &labels)
    }

    /// FLAN-T5 prefix-LM pretraining loss: each caption (token ids without `</s>`) is split at a
    /// random point drawn from `rng`; prefix + `</s>` joins the queries, suffix + `</s>` is the target.
    // query_output: [B, Q, Hq] -> scalar
    pub fn t5_prefix_lm_loss<R: Rng>(
        &self,
        query_output: &Tensor,
        captions: &[Vec<u32>],
        rng: &mut R,
    ) -> Result<Tensor> {
        let eos = match &self.language_model {
            LanguageModel::T5(m) => m.config().eos_token_id,
            LanguageModel::Opt(_) | LanguageModel::Llama(_) => {
                candle_core::bail!("t5_prefix_lm_loss needs a T5 language model")
            }
        };
        let (inputs, targets): (Vec<_>, Vec<_>) = captions
            .iter()
            .map(|c| {
                let (mut p, mut s) = prefix_lm_split(c, rng);
                p.push(eos);
                s.push(eos);
                (p, s)
            })
            .unzip();
        self.t5_lm_loss(query_output, &inputs, &targets)
    }
}
