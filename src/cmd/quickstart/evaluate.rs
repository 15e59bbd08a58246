//! Phases 4 and 6: retrieval (ITC and ITM re-ranked, LAVIS protocol) and zero-shot VQA (official
//! metric) on the world's test split, with the eval crate's loops; plus the baselines they are
//! judged against.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use candle_core::{Device, Tensor};
use tokenizers::Tokenizer;

use datasets::formats::vqa::VqaQuestion;
use datasets::text::{Padding, TextTokenizer};
use eval::retrieval::{
    compute_scores, retrieval_metrics, similarity_matrix, EncodedImages, ImageGallery,
    RetrievalReport, TextGallery,
};
use eval::vqa::files::{VqaAnnotations, VqaPrediction, VqaResults};
use eval::vqa::zero_shot::{
    answer_all, format_prompt, write_results, AnswerGenerator, VqaItem, DEFAULT_PROMPT,
};
use eval::vqa::{vqa_accuracy, AnswerDecoder, VqaAccuracy};
use qformer::llm::{generate, pad_batch, GenerationConfig, PaddingSide};
use qformer::masks::PaddingMask;
use qformer::model::ImageInput;

use super::lm::encode;
use super::models::Models;
use super::world::World;
use crate::common::feature_cache::FeatureCache;

/// LAVIS `k_test` is 128 for COCO's 5k images; the quickstart's galleries are ~10x smaller.
/// `k_test` `None`: ITC only (no ITM re-ranking).
pub fn retrieval(
    models: &Models,
    features: &FeatureCache,
    world: &World,
    tokenizer: &TextTokenizer,
    k_test: Option<usize>,
) -> Result<RetrievalReport> {
    let model = &models.qformer;
    let names: Vec<&str> = world.test.images.iter().map(|i| i.image.as_str()).collect();
    let mut parts = Vec::new();
    for chunk in names.chunks(128) {
        let vision_features = features.batch(chunk)?;
        let image_feats = model
            .encode_image(ImageInput::VisionFeatures(&vision_features))?
            .image_feats
            .ok_or_else(|| anyhow!("the Q-Former has no vision projection"))?;
        parts.push(EncodedImages { vision_features, image_feats });
    }
    let images = ImageGallery::from_encoded(model, &parts)?;
    let texts: Vec<&str> = world.test.texts.iter().map(String::as_str).collect();
    let tok = tokenizer.encode(&texts, Padding::Longest)?;
    let dev = features.device();
    let ids = Tensor::from_vec(tok.input_ids.clone(), (tok.batch, tok.seq_len), dev)?;
    let rows: Vec<Vec<u32>> = tok.attention_mask.chunks(tok.seq_len).map(<[u32]>::to_vec).collect();
    let texts = TextGallery::encode(model, ids, PaddingMask::from_rows(&rows)?, 256)?;
    let Some(k_test) = k_test else {
        let sims_i2t = similarity_matrix(&images, &texts, 256)?;
        let n_txt = texts.len();
        let sims_t2i: Vec<Vec<f32>> =
            (0..n_txt).map(|t| sims_i2t.iter().map(|row| row[t]).collect()).collect();
        let itc =
            retrieval_metrics(&sims_i2t, &sims_t2i, &world.test.img2txt, &world.test.txt2img)?;
        return Ok(RetrievalReport { itc, rerank: None, images: images.len(), texts: n_txt });
    };
    let scores = compute_scores(model, &images, &texts, k_test, 256, &mut |_, _| {})?;
    Ok(scores.report(&world.test.img2txt, &world.test.txt2img)?)
}

/// What the LLM is given besides the question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// The projected query outputs of the image (BLIP-2).
    Image,
    /// Nothing: the language prior alone.
    NoImage,
    /// A ground-truth caption of the image as text: what the LM can do with a perfect
    /// description, an upper bound for the bridge.
    GoldCaption,
}

pub struct WorldAnswerer<'a> {
    pub models: &'a Models,
    pub features: &'a FeatureCache,
    pub tokenizer: &'a Tokenizer,
    pub gen: GenerationConfig,
    pub context: Context,
    pub captions: &'a HashMap<String, String>,
    pub device: Device,
}

impl WorldAnswerer<'_> {
    /// Decoded continuations of `prompts` (each tokenized with the leading `</s>`).
    pub fn continue_prompts(&self, images: &[&str], prompts: &[String]) -> Result<Vec<String>> {
        let llm = &self.models.llm;
        let mut rows = Vec::with_capacity(prompts.len());
        for (img, p) in images.iter().zip(prompts) {
            let mut ids = vec![2u32];
            if self.context == Context::GoldCaption {
                let c = self.captions.get(*img).ok_or_else(|| anyhow!("no caption for {img}"))?;
                ids.extend(encode(self.tokenizer, c)?);
                ids.push(2);
            }
            ids.extend(encode(self.tokenizer, p)?);
            rows.push(ids);
        }
        let out = match self.context {
            Context::Image => {
                let feats = self.features.batch(images)?;
                let q = self
                    .models
                    .qformer
                    .encode_image(ImageInput::VisionFeatures(&feats))?
                    .query_output;
                let (embeds, mask) = llm.prompt_inputs(&q, &rows)?;
                generate(llm, &embeds, &mask, &self.gen)?
            }
            Context::NoImage | Context::GoldCaption => {
                let (ids, mask) = pad_batch(&rows, 1, PaddingSide::Left, &self.device)?;
                let embeds = llm.language_model.embed(&ids)?;
                generate(&llm.language_model, &embeds, &mask, &self.gen)?
            }
        };
        out.iter()
            .map(|ids| {
                self.tokenizer.decode(ids, true).map_err(|e| anyhow!("decoding {ids:?}: {e}"))
            })
            .collect()
    }
}

impl AnswerGenerator for WorldAnswerer<'_> {
    fn answer_batch(
        &mut self,
        images: &[PathBuf],
        prompts: &[String],
    ) -> std::result::Result<Vec<String>, String> {
        let names: Vec<String> = images.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.continue_prompts(&names, prompts).map_err(|e| e.to_string())
    }
}

/// The VQA items of the test split with LAVIS's zero-shot OPT prompt.
pub fn vqa_items(questions: &[VqaQuestion]) -> Result<Vec<VqaItem>> {
    questions
        .iter()
        .map(|q| {
            Ok(VqaItem {
                question_id: q.question_id as i64,
                image: PathBuf::from(World::image_of_question(q)),
                text_input: format_prompt(DEFAULT_PROMPT, &q.question)?,
            })
        })
        .collect()
}

/// Answers every item, writes the official results file, scores it with the official metric.
pub fn vqa(
    answerer: &mut WorldAnswerer,
    items: &[VqaItem],
    annotations: &Path,
    results: &Path,
) -> Result<VqaAccuracy> {
    let preds = answer_all(items, 64, AnswerDecoder::Opt, answerer, |_| {})?;
    score(preds, annotations, results)
}

pub fn score(preds: Vec<VqaPrediction>, annotations: &Path, results: &Path) -> Result<VqaAccuracy> {
    write_results(results, &preds)?;
    let anns = VqaAnnotations::read(annotations)?;
    Ok(vqa_accuracy(&anns, &VqaResults::from_predictions(&results.display().to_string(), preds))?)
}

/// Predicts, for every test question, the training split's most frequent answer: overall
/// (`by_type = false`) or per question type (the stronger "prior" baseline).
pub fn majority_predictions(
    train: &[VqaQuestion],
    test: &[VqaQuestion],
    by_type: bool,
) -> Vec<VqaPrediction> {
    let key = |q: &VqaQuestion| match (&q.annotation, by_type) {
        (Some(a), true) => a.question_type.clone(),
        _ => String::new(),
    };
    let mut counts: HashMap<String, HashMap<String, usize>> = HashMap::new();
    for q in train {
        if let Some(a) = &q.annotation {
            let ans = a.multiple_choice_answer.clone().unwrap_or_default();
            *counts.entry(key(q)).or_default().entry(ans).or_default() += 1;
        }
    }
    let best = |k: &str| -> String {
        let table = counts.get(k).or_else(|| counts.get("")).cloned().unwrap_or_default();
        let mut v: Vec<(String, usize)> = table.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.first().map(|x| x.0.clone()).unwrap_or_default()
    };
    test.iter()
        .map(|q| VqaPrediction { question_id: q.question_id as i64, answer: best(&key(q)) })
        .collect()
}

pub fn generation_config(max_new_tokens: usize) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens,
        min_new_tokens: 1,
        num_beams: 1,
        // "\n" (id 4) ends a caption or an answer, as LAVIS's OPT models stop at "\n".
        eos_token_ids: vec![4, 2],
        pad_token_id: 1,
        ..Default::default()
    }
}
