//! Greedy and beam-search generation with HF `generate` semantics (transformers 4.57): logits
//! processors (min new tokens, repetition penalty), EOS handling, length penalty and the
//! default (`early_stopping=False`) beam-search stopping heuristic.

use candle_core::{DType, Result, Tensor};

use super::bridge::{Blip2Llm, LanguageModel};
use super::kv_cache::KvCache;
use super::llama::LlamaForCausalLm;
use super::opt::OptForCausalLm;
use super::t5::{T5Cache, T5ForConditionalGeneration};

/// HF `GenerationConfig` subset used by BLIP-2.
#[derive(Debug, Clone)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub min_new_tokens: usize,
    pub num_beams: usize,
    pub length_penalty: f64,
    pub repetition_penalty: f64,
    /// Any of these ends a sequence.
    pub eos_token_ids: Vec<u32>,
    /// Fills finished greedy rows and beam outputs shorter than the longest.
    pub pad_token_id: u32,
    /// A sequence ends after the step at which its generated ids end with one of these (the
    /// stop ids stay in the output), as MiniGPT-4's `StoppingCriteriaSub`. Greedy: per row (HF
    /// ORs a criterion's verdict into each row's unfinished flag; MiniGPT-4's one-bool criterion
    /// is the same at batch 1, the only way it is used). Beams: a candidate ending in a stop
    /// sequence is a finished hypothesis, as one ending in EOS.
    pub stop_sequences: Vec<Vec<u32>>,
}

impl GenerationConfig {
    /// Whether generated ids `ids` end with one of [`Self::stop_sequences`].
    pub fn ends_with_stop(&self, ids: &[u32]) -> bool {
        self.stop_sequences.iter().any(|s| !s.is_empty() && ids.ends_with(s))
    }

    /// Whether `ids` followed by `next` would end with a stop sequence (without building the
    /// extended sequence: beam search asks this of every candidate).
    pub fn ends_with_stop_after(&self, ids: &[u32], next: u32) -> bool {
        self.stop_sequences.iter().any(|s| match s.split_last() {
            Some((&last, head)) => last == next && ids.ends_with(head),
            None => false,
        })
    }
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 20,
            min_new_tokens: 0,
            num_beams: 1,
            length_penalty: 1.0,
            repetition_penalty: 1.0,
            eos_token_ids: vec![2],
            pad_token_id: 1,
            stop_sequences: Vec::new(),
        }
    }
}

/// A model that decodes one token at a time from a prefix given as input embeddings.
pub trait IncrementalDecoder {
    type State: Clone;

    /// Run the prefix; returns the next-token logits `[B, V]` (f32) and the decode state.
    // inputs_embeds: [B, T, D], attention_mask: [B, T] -> ([B, V], state)
    fn prefill(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<(Tensor, Self::State)>;

    /// Feed one token per row; returns the next-token logits `[B, V]`.
    fn step(&self, tokens: &[u32], state: Self::State) -> Result<(Tensor, Self::State)>;

    /// Keep batch rows `idx` (beam reordering).
    fn reorder(&self, state: &Self::State, idx: &[u32]) -> Result<Self::State>;

    /// Tokens that start every output (T5: the decoder start token); they count as the
    /// "decoder prompt" for length penalties and are returned with the generated ids.
    fn output_prefix(&self) -> Vec<u32>;
}

fn last_logits(logits: &Tensor) -> Result<Tensor> {
    let t = logits.dim(1)?;
    logits.narrow(1, t - 1, 1)?.squeeze(1)?.to_dtype(DType::F32)
}

/// A decoder-only LM with a KV cache (OPT, LLaMA): what incremental decoding needs of it.
pub trait CachedCausalLm {
    // ids: [B, T] -> [B, T, E]
    fn embed(&self, ids: &Tensor) -> Result<Tensor>;
    // h: [B, T, E] -> [B, T, V]
    fn lm_head(&self, h: &Tensor) -> Result<Tensor>;
    /// Hidden states of `inputs_embeds`, which follow the cached positions; `attention_mask`
    /// covers the cached and the new positions.
    // inputs_embeds: [B, T, E], attention_mask: [B, S] -> ([B, T, E], cache)
    fn hidden_with_cache(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &Tensor,
        cache: Option<KvCache>,
    ) -> Result<(Tensor, KvCache)>;
}

impl CachedCausalLm for OptForCausalLm {
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        OptForCausalLm::embed(self, ids)
    }
    fn lm_head(&self, h: &Tensor) -> Result<Tensor> {
        OptForCausalLm::lm_head(self, h)
    }
    fn hidden_with_cache(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &Tensor,
        cache: Option<KvCache>,
    ) -> Result<(Tensor, KvCache)> {
        self.forward_hidden(inputs_embeds, attention_mask, cache)
    }
}

impl CachedCausalLm for LlamaForCausalLm {
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        LlamaForCausalLm::embed(self, ids)
    }
    fn lm_head(&self, h: &Tensor) -> Result<Tensor> {
        LlamaForCausalLm::lm_head(self, h)
    }
    fn hidden_with_cache(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &Tensor,
        cache: Option<KvCache>,
    ) -> Result<(Tensor, KvCache)> {
        // Positions continue from the cache as HF `generate` computes them: cumsum(mask) - 1.
        self.forward_hidden_cached(inputs_embeds, attention_mask, cache)
    }
}

/// Decoder-only decode state: the KV cache and the mask over every position so far.
#[derive(Debug, Clone)]
pub struct CausalDecodeState {
    pub cache: KvCache,
    pub attention_mask: Tensor,
}

impl<M: CachedCausalLm> IncrementalDecoder for M {
    type State = CausalDecodeState;

    fn prefill(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<(Tensor, CausalDecodeState)> {
        // LM head on the last position only (HF `logits_to_keep=1`): over the whole prefix it
        // would cost as much as decoding a short answer.
        let (hidden, cache) = self.hidden_with_cache(inputs_embeds, attention_mask, None)?;
        let t = hidden.dim(1)?;
        let logits = self.lm_head(&hidden.narrow(1, t - 1, 1)?)?;
        Ok((
            last_logits(&logits)?,
            CausalDecodeState { cache, attention_mask: attention_mask.clone() },
        ))
    }

    fn step(
        &self,
        tokens: &[u32],
        state: CausalDecodeState,
    ) -> Result<(Tensor, CausalDecodeState)> {
        let dev = state.attention_mask.device();
        let b = tokens.len();
        let ids = Tensor::from_vec(tokens.to_vec(), (b, 1), dev)?;
        let one = Tensor::ones((b, 1), state.attention_mask.dtype(), dev)?;
        let mask = Tensor::cat(&[&state.attention_mask, &one], 1)?;
        let emb = self.embed(&ids)?;
        let (hidden, cache) = self.hidden_with_cache(&emb, &mask, Some(state.cache))?;
        let logits = self.lm_head(&hidden)?;
        Ok((last_logits(&logits)?, CausalDecodeState { cache, attention_mask: mask }))
    }

    fn reorder(&self, state: &CausalDecodeState, idx: &[u32]) -> Result<CausalDecodeState> {
        let idx = Tensor::from_slice(idx, idx.len(), state.attention_mask.device())?;
        Ok(CausalDecodeState {
            cache: state.cache.index_select(&idx)?,
            attention_mask: state.attention_mask.index_select(&idx, 0)?,
        })
    }

    fn output_prefix(&self) -> Vec<u32> {
        Vec::new()
    }
}

/// T5 decode state: encoder output and mask, decoder caches.
#[derive(Debug, Clone)]
pub struct T5DecodeState {
    pub encoder_hidden: Tensor,
    pub encoder_mask: Tensor,
    pub cache: T5Cache,
}

impl IncrementalDecoder for T5ForConditionalGeneration {
    type State = T5DecodeState;

    fn prefill(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<(Tensor, T5DecodeState)> {
        let enc = self.encode(inputs_embeds, attention_mask)?;
        let b = enc.dim(0)?;
        let start = vec![self.config().decoder_start_token_id; b];
        let ids = Tensor::from_vec(start, (b, 1), enc.device())?;
        let (logits, cache) = self.decode(&ids, None, &enc, attention_mask, None)?;
        Ok((
            last_logits(&logits)?,
            T5DecodeState { encoder_hidden: enc, encoder_mask: attention_mask.clone(), cache },
        ))
    }

    fn step(&self, tokens: &[u32], state: T5DecodeState) -> Result<(Tensor, T5DecodeState)> {
        let b = tokens.len();
        let ids = Tensor::from_vec(tokens.to_vec(), (b, 1), state.encoder_hidden.device())?;
        let (logits, cache) =
            self.decode(&ids, None, &state.encoder_hidden, &state.encoder_mask, Some(state.cache))?;
        Ok((last_logits(&logits)?, T5DecodeState { cache, ..state }))
    }

    fn reorder(&self, state: &T5DecodeState, idx: &[u32]) -> Result<T5DecodeState> {
        let idx = Tensor::from_slice(idx, idx.len(), state.encoder_hidden.device())?;
        Ok(T5DecodeState {
            encoder_hidden: state.encoder_hidden.index_select(&idx, 0)?,
            encoder_mask: state.encoder_mask.index_select(&idx, 0)?,
            cache: state.cache.index_select(&idx)?,
        })
    }

    fn output_prefix(&self) -> Vec<u32> {
        vec![self.config().decoder_start_token_id]
    }
}

/// Decode state of either LLM.
#[derive(Debug, Clone)]
pub enum DecodeState {
    Opt(CausalDecodeState),
    T5(T5DecodeState),
    Llama(CausalDecodeState),
}

impl IncrementalDecoder for LanguageModel {
    type State = DecodeState;

    fn prefill(&self, e: &Tensor, m: &Tensor) -> Result<(Tensor, DecodeState)> {
        match self {
            Self::Opt(x) => x.prefill(e, m).map(|(l, s)| (l, DecodeState::Opt(s))),
            Self::T5(x) => x.prefill(e, m).map(|(l, s)| (l, DecodeState::T5(s))),
            Self::Llama(x) => x.prefill(e, m).map(|(l, s)| (l, DecodeState::Llama(s))),
        }
    }

    fn step(&self, tokens: &[u32], state: DecodeState) -> Result<(Tensor, DecodeState)> {
        match (self, state) {
            (Self::Opt(x), DecodeState::Opt(s)) => {
                x.step(tokens, s).map(|(l, s)| (l, DecodeState::Opt(s)))
            }
            (Self::T5(x), DecodeState::T5(s)) => {
                x.step(tokens, s).map(|(l, s)| (l, DecodeState::T5(s)))
            }
            (Self::Llama(x), DecodeState::Llama(s)) => {
                x.step(tokens, s).map(|(l, s)| (l, DecodeState::Llama(s)))
            }
            _ => candle_core::bail!("decode state does not belong to this language model"),
        }
    }

    fn reorder(&self, state: &DecodeState, idx: &[u32]) -> Result<DecodeState> {
        match (self, state) {
            (Self::Opt(x), DecodeState::Opt(s)) => x.reorder(s, idx).map(DecodeState::Opt),
            (Self::T5(x), DecodeState::T5(s)) => x.reorder(s, idx).map(DecodeState::T5),
            (Self::Llama(x), DecodeState::Llama(s)) => x.reorder(s, idx).map(DecodeState::Llama),
            _ => candle_core::bail!("decode state does not belong to this language model"),
        }
    }

    fn output_prefix(&self) -> Vec<u32> {
        match self {
            Self::Opt(x) => x.output_prefix(),
            Self::T5(x) => x.output_prefix(),
            Self::Llama(x) => x.output_prefix(),
        }
    }
}

impl IncrementalDecoder for Blip2Llm {
    type State = DecodeState;
    fn prefill(&self, e: &Tensor, m: &Tensor) -> Result<(Tensor, DecodeState)> {
        self.language_model.prefill(e, m)
    }
    fn step(&self, tokens: &[u32], state: DecodeState) -> Result<(Tensor, DecodeState)> {
        self.language_model.step(tokens, state)
    }
    fn reorder(&self, state: &DecodeState, idx: &[u32]) -> Result<DecodeState> {
        self.language_model.reorder(state, idx)
    }
    fn output_prefix(&self) -> Vec<u32> {
        self.language_model.output_prefix()
    }
}

/// HF logits processors in the order `generate` builds them: repetition penalty, then
/// min-new-tokens. `history`: every id the model has seen for this row (HF passes `input_ids`,
/// which for decoder-only BLIP-2 includes the `<image>` and prompt ids).
fn process_scores(scores: &mut [f32], history: &[u32], new_tokens: usize, cfg: &GenerationConfig) {
    if cfg.repetition_penalty != 1.0 {
        let p = cfg.repetition_penalty as f32;
        let mut seen = history.to_vec();
        seen.sort_unstable();
        seen.dedup();
        for &t in &seen {
            if let Some(s) = scores.get_mut(t as usize) {
                *s = if *s < 0.0 { *s * p } else { *s / p };
            }
        }
    }
    if new_tokens < cfg.min_new_tokens {
        for &e in &cfg.eos_token_ids {
            if let Some(s) = scores.get_mut(e as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
    }
}

fn log_softmax_row(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    let lse = sum.ln();
    row.iter().map(|&x| x - max - lse).collect()
}

/// Generate from a prefix of input embeddings. Returns per row the generated ids (OPT: new
/// tokens only; T5: the decoder output including its start token, as HF returns them), each
/// ending at its EOS: unlike HF's fixed-width tensor, rows are not padded.
// inputs_embeds: [B, T, D], attention_mask: [B, T]
pub fn generate<M: IncrementalDecoder>(
    model: &M,
    inputs_embeds: &Tensor,
    attention_mask: &Tensor,
    cfg: &GenerationConfig,
) -> Result<Vec<Vec<u32>>> {
    generate_with_history(model, inputs_embeds, attention_mask, None, cfg)
}

/// As [`generate`], with the prompt ids HF's repetition penalty also sees (decoder-only
/// models: the `<image>` ids + prompt ids of each row, padding included as HF does).
pub fn generate_with_history<M: IncrementalDecoder>(
    model: &M,
    inputs_embeds: &Tensor,
    attention_mask: &Tensor,
    prompt_ids: Option<&[Vec<u32>]>,
    cfg: &GenerationConfig,
) -> Result<Vec<Vec<u32>>> {
    if cfg.num_beams == 0 {
        candle_core::bail!("num_beams must be at least 1");
    }
    let b = inputs_embeds.dim(0)?;
    if let Some(p) = prompt_ids {
        if p.len() != b {
            candle_core::bail!("{} prompt id rows for a batch of {b}", p.len());
        }
    }
    let history: Vec<Vec<u32>> = (0..b)
        .map(|i| {
            let mut h = prompt_ids.map(|p| p[i].clone()).unwrap_or_default();
            h.extend(model.output_prefix());
            h
        })
        .collect();
    if cfg.num_beams == 1 {
        greedy(model, inputs_embeds, attention_mask, history, cfg)
    } else {
        beam_search(model, inputs_embeds, attention_mask, history, cfg)
    }
}

fn greedy<M: IncrementalDecoder>(
    model: &M,
    embeds: &Tensor,
    mask: &Tensor,
    mut history: Vec<Vec<u32>>,
    cfg: &GenerationConfig,
) -> Result<Vec<Vec<u32>>> {
    let b = embeds.dim(0)?;
    let prefix = model.output_prefix();
    let mut out: Vec<Vec<u32>> = vec![prefix.clone(); b];
    let mut finished = vec![false; b];
    if cfg.max_new_tokens == 0 {
        return Ok(out);
    }
    let (mut logits, mut state) = model.prefill(embeds, mask)?;
    for step in 0..cfg.max_new_tokens {
        let rows = logits.to_vec2::<f32>()?;
        let mut next = Vec::with_capacity(b);
        for (i, mut row) in rows.into_iter().enumerate() {
            if finished[i] {
                next.push(cfg.pad_token_id);
                continue;
            }
            process_scores(&mut row, &history[i], step, cfg);
            next.push(argmax(&row));
        }
        for i in 0..b {
            // Finished rows keep feeding pad (as HF) but their output stops at EOS.
            if finished[i] {
                continue;
            }
            out[i].push(next[i]);
            history[i].push(next[i]);
            finished[i] =
                cfg.eos_token_ids.contains(&next[i]) || cfg.ends_with_stop(&out[i][prefix.len()..]);
        }
        if finished.iter().all(|&f| f) || step + 1 == cfg.max_new_tokens {
            break;
        }
        let (l, s) = model.step(&next, state)?;
        logits = l;
        state = s;
    }
    Ok(out)
}

/// First index of the maximum (torch.argmax).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

fn repeat_rows(x: &Tensor, n: usize) -> Result<Tensor> {
    let b = x.dim(0)?;
    let idx: Vec<u32> = (0..b as u32).flat_map(|i| std::iter::repeat_n(i, n)).collect();
    x.index_select(&Tensor::from_vec(idx, b * n, x.device())?, 0)
}

const NEG: f32 = -1.0e9;

/// Vectorised beam search of transformers 4.57 (`GenerationMixin._beam_search`), one batch row
/// at a time on the host.
fn beam_search<M: IncrementalDecoder>(
    model: &M,
    embeds: &Tensor,
    mask: &Tensor,
    history: Vec<Vec<u32>>,
    cfg: &GenerationConfig,
) -> Result<Vec<Vec<u32>>> {
    let nb = cfg.num_beams;
    let b = embeds.dim(0)?;
    let prefix = model.output_prefix();
    if cfg.max_new_tokens == 0 {
        return Ok(vec![prefix; b]);
    }
    let embeds = repeat_rows(embeds, nb)?;
    let mask = repeat_rows(mask, nb)?;
    let (mut logits, mut state) = model.prefill(&embeds, &mask)?;
    let keep = (2usize).max(1 + cfg.eos_token_ids.len()) * nb;
    let lp = cfg.length_penalty as f32;
    // Per batch row: running beams (sequences of generated ids), their scores, finished beams.
    let mut running: Vec<Vec<Vec<u32>>> = vec![vec![Vec::new(); nb]; b];
    let mut running_scores: Vec<Vec<f32>> =
        vec![(0..nb).map(|j| if j == 0 { 0.0 } else { NEG }).collect(); b];
    let mut finished: Vec<Vec<(f32, Vec<u32>)>> = vec![Vec::new(); b];
    let mut heuristic_unsatisfied = vec![true; b];
    let vocab = logits.dim(1)?;
    for step in 0..cfg.max_new_tokens {
        let rows = logits.to_vec2::<f32>()?;
        // Tokens generated once this step's token is appended (HF `cur_len + 1 - decoder_prompt_len`).
        let gen_len = step + 1;
        let last_step = step + 1 == cfg.max_new_tokens;
        let mut reorder_idx = Vec::with_capacity(b * nb);
        let mut next_tokens = Vec::with_capacity(b * nb);
        let mut improvement_possible = false;
        let mut all_hit = true;
        for bi in 0..b {
            // Candidates over all beams: (score, beam, token), top `keep` by score.
            let mut cand: Vec<(f32, usize, u32)> = Vec::with_capacity(nb * vocab);
            for j in 0..nb {
                let mut hist = history[bi].clone();
                hist.extend(&running[bi][j]);
                let mut lp_row = log_softmax_row(&rows[bi * nb + j]);
                process_scores(&mut lp_row, &hist, step, cfg);
                let base = running_scores[bi][j];
                for (t, &x) in lp_row.iter().enumerate() {
                    cand.push((x + base, j, t as u32));
                }
            }
            // torch.topk order: descending score, ties by lower flat index.
            cand.sort_by(|a, b| {
                b.0.partial_cmp(&a.0)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then((a.1 * vocab + a.2 as usize).cmp(&(b.1 * vocab + b.2 as usize)))
            });
            cand.truncate(keep);
            let hits: Vec<bool> = cand
                .iter()
                .map(|c| {
                    last_step
                        || cfg.eos_token_ids.contains(&c.2)
                        || cfg.ends_with_stop_after(&running[bi][c.1], c.2)
                })
                .collect();
            // Next running beams: best `nb` candidates that did not stop.
            let mut order: Vec<usize> = (0..keep).collect();
            let run_score = |k: usize| cand[k].0 + if hits[k] { NEG } else { 0.0 };
            order.sort_by(|&x, &y| {
                run_score(y)
                    .partial_cmp(&run_score(x))
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(x.cmp(&y))
            });
            let mut new_running = Vec::with_capacity(nb);
            let mut new_scores = Vec::with_capacity(nb);
            for &k in order.iter().take(nb) {
                let (_, j, t) = cand[k];
                let mut seq = running[bi][j].clone();
                seq.push(t);
                new_running.push(seq);
                new_scores.push(run_score(k));
                reorder_idx.push((bi * nb + j) as u32);
                next_tokens.push(t);
            }
            // Finished beams: merge those among the top `nb` candidates that stopped.
            let denom = (gen_len as f32).powf(lp);
            for (k, c) in cand.iter().enumerate().take(nb) {
                if !hits[k] || !heuristic_unsatisfied[bi] {
                    continue;
                }
                let (_, j, t) = *c;
                let mut seq = running[bi][j].clone();
                seq.push(t);
                finished[bi].push((c.0 / denom, seq));
            }
            finished[bi].sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
            finished[bi].truncate(nb);
            running[bi] = new_running;
            running_scores[bi] = new_scores;
            // Early-stop heuristic (early_stopping=False): can the best running beam still beat
            // the worst finished one?
            let best_running = running_scores[bi][0] / denom;
            let worst_finished = if finished[bi].len() >= nb {
                finished[bi].iter().map(|f| f.0).fold(f32::INFINITY, f32::min)
            } else {
                NEG
            };
            heuristic_unsatisfied[bi] = heuristic_unsatisfied[bi] && best_running > worst_finished;
            improvement_possible |= heuristic_unsatisfied[bi];
            all_hit &= hits.iter().all(|&h| h);
        }
        // HF stops when no row can improve or every candidate of every row has stopped.
        if last_step || !improvement_possible || all_hit {
            break;
        }
        let s = model.reorder(&state, &reorder_idx)?;
        let (l, s) = model.step(&next_tokens, s)?;
        logits = l;
        state = s;
    }
    Ok(finished
        .into_iter()
        .map(|f| {
            let mut out = prefix.clone();
            if let Some((_, seq)) = f.into_iter().next() {
                out.extend(seq);
            }
            out
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::GenerationConfig;

    /// The beam-search form (`ids` then `next`) agrees with checking the extended sequence, for
    /// one- and two-token stop sequences, hits and misses.
    #[test]
    fn ends_with_stop_after_agrees_with_the_extended_sequence() {
        let cfg =
            GenerationConfig { stop_sequences: vec![vec![7], vec![3, 4]], ..Default::default() };
        for (ids, next) in [(&[1u32, 2][..], 7u32), (&[1, 3], 4), (&[1, 2], 4), (&[], 4), (&[], 7)]
        {
            let mut seq = ids.to_vec();
            seq.push(next);
            assert_eq!(
                cfg.ends_with_stop_after(ids, next),
                cfg.ends_with_stop(&seq),
                "{ids:?} {next}"
            );
        }
        assert!(cfg.ends_with_stop_after(&[3], 4) && !cfg.ends_with_stop_after(&[5], 4));
    }
}
