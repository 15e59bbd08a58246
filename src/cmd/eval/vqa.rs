//! `blip2 eval vqa`: zero-shot VQA with a `Blip2ForConditionalGeneration` directory, LAVIS
//! settings (beams 5, max 10 / min 1 new tokens, OPT length penalty 0, T5 -1), official results
//! file and VQA accuracy; MiniGPT-4 and LLaVA answer in their own templates (LLaVA with
//! LLaVA-1.5's evaluation settings: greedy, up to 128 new tokens, until EOS).

use std::path::PathBuf;

use ::eval::vqa::zero_shot::{
    answer_all, read_items_as, write_results, AnswerGenerator, QuestionText, VqaItem,
    DEFAULT_PROMPT,
};
use ::eval::vqa::{
    vqa_accuracy_with_questions, AnswerDecoder, PythonSum, VqaAnnotations, VqaQuestions, VqaResults,
};
use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use qformer::llm::GenerationConfig;

use super::vqa_score::{print_scores, PythonVersion};
use crate::common::chat::{load_chat, Chat, VqaSearch, LAVIS_VQA_SEARCH};
use crate::common::generator::{Blip2Generator, LlmKind};

#[derive(Debug, Args)]
pub struct VqaArgs {
    /// HF `Blip2ForConditionalGeneration` directory (OPT or T5 LLM), a LLaVA directory (HF or
    /// original), or a MiniGPT-4 parts file (`.toml`).
    #[arg(long)]
    pub model: PathBuf,
    /// Question file (`v2_OpenEnded_mscoco_val2014_questions.json` layout).
    #[arg(long)]
    pub questions: PathBuf,
    /// Annotation file (`v2_mscoco_val2014_annotations.json` layout).
    #[arg(long)]
    pub annotations: PathBuf,
    /// Image folder.
    #[arg(long)]
    pub images: PathBuf,
    /// Image file name of an image id (`{image_id}` or zero-padded `{image_id:012}`).
    #[arg(long, default_value = "COCO_val2014_{image_id:012}.jpg")]
    pub image_pattern: String,
    /// The prompt with `{}` for the question. Default: LAVIS' `Question: {} Short answer:` for
    /// BLIP-2, the model's own question template for MiniGPT-4, and for LLaVA its template
    /// with LLaVA-1.5's VQA instruction (`USER: <image>\n{}\nAnswer the question using a
    /// single word or phrase. ASSISTANT:`). LLaVA's questions go in as written, the others'
    /// as LAVIS cleans them.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Default: 5 (LAVIS) for BLIP-2 and MiniGPT-4, 1 (greedy, LLaVA-1.5's evaluation) for LLaVA.
    #[arg(long)]
    pub num_beams: Option<usize>,
    /// Default: 10 (LAVIS), 128 for LLaVA.
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Default: 1 (LAVIS), 0 for LLaVA.
    #[arg(long)]
    pub min_new_tokens: Option<usize>,
    /// Default: 0 for OPT, -1 for T5 (LAVIS `predict_answers`).
    #[arg(long, allow_hyphen_values = true)]
    pub length_penalty: Option<f64>,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Where to write `[{"question_id", "answer"}]`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = PythonVersion::Py311)]
    pub python: PythonVersion,
    /// Print `{"overall": .., "perAnswerType": {..}}` instead of a table.
    #[arg(long)]
    pub json: bool,
}

struct Answerer<'a> {
    gen: &'a Blip2Generator,
    cfg: GenerationConfig,
}

impl AnswerGenerator for Answerer<'_> {
    fn answer_batch(
        &mut self,
        images: &[PathBuf],
        prompts: &[String],
    ) -> std::result::Result<Vec<String>, String> {
        let ids = self.gen.generate(images, prompts, &self.cfg).map_err(|e| crate::one_line(&e))?;
        ids.iter().map(|r| self.gen.decode(r).map_err(|e| format!("{e:#}"))).collect()
    }
}

/// A chat model answers one question at a time (its prompt holds one image).
struct ChatAnswerer<'a> {
    chat: &'a dyn Chat,
    cfg: GenerationConfig,
}

impl AnswerGenerator for ChatAnswerer<'_> {
    fn answer_batch(
        &mut self,
        images: &[PathBuf],
        prompts: &[String],
    ) -> std::result::Result<Vec<String>, String> {
        images
            .iter()
            .zip(prompts)
            .map(|(image, prompt)| {
                let ids = self
                    .chat
                    .generate(std::slice::from_ref(image), prompt, &self.cfg)
                    .map_err(|e| crate::one_line(&e))?;
                self.chat.answer(&ids).map_err(|e| format!("{e:#}"))
            })
            .collect()
    }
}

pub fn run(args: VqaArgs) -> Result<()> {
    let questions = VqaQuestions::read(&args.questions)?;
    let annotations = VqaAnnotations::read(&args.annotations)?;
    if let Some(chat) = load_chat(&args.model, &Device::Cpu)? {
        let prompt = args.prompt.clone().unwrap_or_else(|| chat.vqa_prompt());
        let text = if chat.lavis_questions() { QuestionText::Lavis } else { QuestionText::Raw };
        let items =
            read_items_as(&args.questions, &args.images, &args.image_pattern, &prompt, text)?;
        let search = search(&args, chat.vqa_search());
        let cfg = chat.generation_config(GenerationConfig {
            max_new_tokens: search.max_new_tokens,
            min_new_tokens: search.min_new_tokens,
            num_beams: search.num_beams,
            length_penalty: args.length_penalty.unwrap_or(1.0),
            ..Default::default()
        });
        let mut answerer = ChatAnswerer { chat: chat.as_ref(), cfg };
        // The answer text is already the model's (MiniGPT-4: cut at `###`; stripped).
        return score(
            &args,
            &items,
            AnswerDecoder::FlanT5,
            &mut answerer,
            &questions,
            &annotations,
        );
    }
    let prompt = args.prompt.clone().unwrap_or_else(|| DEFAULT_PROMPT.to_string());
    let items = read_items_as(
        &args.questions,
        &args.images,
        &args.image_pattern,
        &prompt,
        QuestionText::Lavis,
    )?;
    let gen = Blip2Generator::load(&args.model, &Device::Cpu)?;
    let search = search(&args, LAVIS_VQA_SEARCH);
    let (decoder, default_lp) = match gen.kind() {
        LlmKind::Opt => (AnswerDecoder::Opt, 0.0),
        LlmKind::T5 => (AnswerDecoder::FlanT5, -1.0),
    };
    let cfg = GenerationConfig {
        max_new_tokens: search.max_new_tokens,
        min_new_tokens: search.min_new_tokens,
        num_beams: search.num_beams,
        length_penalty: args.length_penalty.unwrap_or(default_lp),
        ..gen.generation_config()
    };
    let mut answerer = Answerer { gen: &gen, cfg };
    score(&args, &items, decoder, &mut answerer, &questions, &annotations)
}

/// The flags' search settings, the system's defaults where they are left out.
fn search(args: &VqaArgs, defaults: VqaSearch) -> VqaSearch {
    VqaSearch {
        num_beams: args.num_beams.unwrap_or(defaults.num_beams),
        max_new_tokens: args.max_new_tokens.unwrap_or(defaults.max_new_tokens),
        min_new_tokens: args.min_new_tokens.unwrap_or(defaults.min_new_tokens),
    }
}

/// Answers every item, writes the results file when asked, prints the VQA accuracy.
fn score<G: AnswerGenerator>(
    args: &VqaArgs,
    items: &[VqaItem],
    decoder: AnswerDecoder,
    answerer: &mut G,
    questions: &VqaQuestions,
    annotations: &VqaAnnotations,
) -> Result<()> {
    let bar = ProgressBar::new(items.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} questions {elapsed} eta {eta}")
            .context("progress bar template")?,
    );
    let preds =
        answer_all(items, args.batch_size, decoder, answerer, |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    if let Some(out) = &args.out {
        write_results(out, &preds)?;
    }
    let source = args
        .out
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "generated answers".into());
    let results = VqaResults::from_predictions(&source, preds);
    let summation = match args.python {
        PythonVersion::Py311 => PythonSum::LeftFold,
        PythonVersion::Py312 => PythonSum::Neumaier,
    };
    let acc = vqa_accuracy_with_questions(questions, annotations, &results, summation)?;
    print_scores(&acc, args.json)
}
