//! Phase 2b: pretrain the tiny OPT on the world's *text only* (it never sees an image).
//!
//! Each document is a description of a scene followed by `</s>` and either another description
//! of the same scene (a paraphrase) or a question about it in the zero-shot VQA prompt with its
//! answer:
//!
//! ```text
//! </s> a red circle above two blue squares </s> two blue squares below a red circle \n
//! </s> a red circle above two blue squares </s> Question: what color is the circle? Short answer: red \n
//! ```
//!
//! So the LM learns to restate and to answer about *whatever precedes the second `</s>`*. Stage
//! two then trains the Q-Former to put the image there: the LLM input is
//! `[projected queries] </s> caption \n`, exactly the slot the first description held, and
//! zero-shot VQA asks `[projected queries] </s> Question: … Short answer:`.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use candle_core::{DType, Device};
use rand::seq::IndexedRandom;
use rand::Rng;
use tokenizers::Tokenizer;

use datasets::LoaderState;
use eval::vqa::zero_shot::{format_prompt, DEFAULT_PROMPT};
use qformer::llm::OptForCausalLm;
use qformer::llm::{causal_lm_loss, pad_batch, PaddingSide, IGNORE_INDEX};
use train::{Batches, Fetched, MicroLoss, StepBatch, Task, TrainRng};

use super::world::World;

/// Share of documents whose first description is partial (see [`LmCorpus::sample`]).
pub const PARTIAL_PROB: f64 = 0.5;
/// Probability that a token of a partial description is left out.
pub const PARTIAL_TOKEN_DROP: f64 = 0.4;

/// Token ids of one scene's texts.
pub struct SceneText {
    pub captions: Vec<Vec<u32>>,
    /// (prompt ids incl. nothing special, answer ids)
    pub qa: Vec<(Vec<u32>, Vec<u32>)>,
}

pub struct LmCorpus {
    pub scenes: Vec<SceneText>,
    pub bos: u32,
    pub newline: u32,
    pub pad: u32,
}

pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(tok.encode(text, false).map_err(|e| anyhow!("tokenizing {text:?}: {e}"))?.get_ids().to_vec())
}

impl LmCorpus {
    /// The training split's captions and question/answer pairs, grouped by image.
    pub fn from_world(world: &World, tok: &Tokenizer, newline: u32) -> Result<Self> {
        let mut by_image: BTreeMap<String, SceneText> = BTreeMap::new();
        for item in &world.train {
            by_image
                .entry(item.key.clone())
                .or_insert_with(|| SceneText { captions: vec![], qa: vec![] })
                .captions
                .push(encode(tok, &item.caption)?);
        }
        for q in &world.train_questions {
            let Some(scene) = by_image.get_mut(&World::image_of_question(q)) else { continue };
            let Some(ann) = &q.annotation else { continue };
            let answer =
                ann.multiple_choice_answer.clone().unwrap_or_else(|| ann.answers[0].answer.clone());
            let prompt = format_prompt(DEFAULT_PROMPT, &q.question)?;
            scene.qa.push((encode(tok, &prompt)?, encode(tok, &answer)?));
        }
        Ok(Self { scenes: by_image.into_values().collect(), bos: 2, newline, pad: 1 })
    }

    /// One random document: `</s> caption </s> (paraphrase | question answer) \n`.
    ///
    /// In half the documents the first description is partial: each of its tokens is dropped
    /// with probability [`PARTIAL_TOKEN_DROP`]. The soft visual prompt that stage two puts in
    /// that slot carries only part of a scene (colors before shapes and counts), and an LM that
    /// only ever saw whole descriptions there stopped following the question behind such a
    /// prefix: at seed 0 it answered 15 % of "how many" questions with something other than a
    /// number ("yes", a color) and 14 % of yes/no questions with neither ("2").
    pub fn sample(&self, rng: &mut TrainRng) -> Vec<u32> {
        let scene = &self.scenes[rng.random_range(0..self.scenes.len())];
        let mut doc = vec![self.bos];
        let first = scene.captions.choose(rng).expect("every scene has captions");
        if rng.random_bool(PARTIAL_PROB) {
            doc.extend(first.iter().filter(|_| !rng.random_bool(PARTIAL_TOKEN_DROP)));
        } else {
            doc.extend(first);
        }
        doc.push(self.bos);
        if scene.qa.is_empty() || rng.random_bool(0.3) {
            doc.extend(scene.captions.choose(rng).expect("every scene has captions"));
        } else {
            let (q, a) = scene.qa.choose(rng).expect("non-empty");
            doc.extend(q);
            doc.extend(a);
        }
        doc.push(self.newline);
        doc
    }

    /// Mean next-token loss of `batch` documents drawn from `rng` (pads ignored).
    pub fn loss(
        &self,
        opt: &OptForCausalLm,
        batch: usize,
        rng: &mut TrainRng,
        device: &Device,
    ) -> qformer::Result<MicroLoss> {
        let docs: Vec<Vec<u32>> = (0..batch).map(|_| self.sample(rng)).collect();
        let (ids, mask) = pad_batch(&docs, self.pad, PaddingSide::Right, device)?;
        let l = ids.dim(1)?;
        let labels: Vec<Vec<i64>> = docs
            .iter()
            .map(|d| {
                let mut row: Vec<i64> = d.iter().map(|&t| t as i64).collect();
                row.resize(l, IGNORE_INDEX);
                row
            })
            .collect();
        let embeds = opt.embed(&ids)?;
        let (logits, _) = opt.forward_embeds(&embeds, &mask.to_dtype(DType::U32)?, None)?;
        let loss = causal_lm_loss(&logits, &labels)?;
        Ok(MicroLoss { total: loss.clone(), parts: vec![(TEXT_LM.into(), loss)] })
    }
}

/// The metrics name of the text-only LM loss.
pub const TEXT_LM: &str = "text_lm";

/// Phase 2b's task: the OPT's next-token loss on world documents. The documents are drawn from
/// the run RNG inside the loss, so a step's batch carries nothing but its place.
pub struct TextLm<'a> {
    pub opt: &'a OptForCausalLm,
    pub corpus: &'a LmCorpus,
    pub batch: usize,
    pub device: Device,
}

impl Task for TextLm<'_> {
    type Batch = ();

    fn loss(&self, _: &(), rng: &mut TrainRng) -> qformer::Result<MicroLoss> {
        self.corpus.loss(self.opt, self.batch, rng, &self.device)
    }
}

/// One empty micro-batch per step, counting `per_step` documents (drawn by [`TextLm`]).
pub struct Documents {
    pub per_step: usize,
}

impl Batches for Documents {
    type Batch = ();

    fn start_epoch(&mut self, _: u64, _: Option<LoaderState>) -> train::Result<()> {
        Ok(())
    }

    fn next(&mut self) -> train::Result<Fetched<()>> {
        let step =
            StepBatch { micro: vec![()], samples: self.per_step as u64, skipped: 0, cursor: None };
        Ok(Fetched::Step(step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_subsequence(part: &[u32], whole: &[u32]) -> bool {
        let mut it = whole.iter();
        part.iter().all(|t| it.any(|w| w == t))
    }

    #[test]
    fn half_the_first_descriptions_are_partial_subsequences() {
        let caption: Vec<u32> = (10..20).collect();
        let corpus = LmCorpus {
            scenes: vec![SceneText { captions: vec![caption.clone()], qa: vec![] }],
            bos: 2,
            newline: 3,
            pad: 1,
        };
        let mut rng = train::rng::seeded(0);
        let n = 4000;
        let mut partial = 0;
        for _ in 0..n {
            let doc = corpus.sample(&mut rng);
            assert_eq!(doc[0], 2);
            let second = 1 + doc[1..].iter().position(|&t| t == 2).expect("two </s>");
            let first = &doc[1..second];
            assert!(is_subsequence(first, &caption), "{first:?}");
            assert_eq!(&doc[second + 1..], [caption.as_slice(), &[3]].concat().as_slice());
            partial += usize::from(first.len() < caption.len());
        }
        // A partial description keeps all ten tokens with probability 0.6^10 (0.6 %).
        let want = PARTIAL_PROB * (1.0 - (1.0 - PARTIAL_TOKEN_DROP).powi(10));
        let got = partial as f64 / n as f64;
        assert!((got - want).abs() < 0.03, "partial share {got}, expected {want}");
    }
}
