//! `blip2 generate`: prompted generation from one image with a `Blip2ForConditionalGeneration`
//! directory, as HF 4.57 `generate` does it; a LLaVA directory (HF or original) goes to
//! [`super::generate_llava`], a MiniGPT-4 parts file to [`super::generate_minigpt4`].

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use serde::Serialize;

use crate::common::generator::Blip2Generator;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// HF `Blip2ForConditionalGeneration` directory (OPT or T5 LLM), a LLaVA directory (HF
    /// `LlavaForConditionalGeneration`, or original LLaVA with its `mm_vision_tower` found as a
    /// directory or in the HF hub cache), or a MiniGPT-4 parts file (`.toml`).
    #[arg(long)]
    pub model: PathBuf,
    /// The image (BLIP-2: exactly one). LLaVA: one per `<image>` in the prompt, in order.
    #[arg(long, required = true)]
    pub image: Vec<PathBuf>,
    /// The text exactly as the model reads it, with the system's image marker (`<image>` for
    /// LLaVA) where each image goes.
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// A question put into the system's own template instead of `--prompt`: LLaVA-1.5
    /// `USER: <image>\n{Q} ASSISTANT:`, MiniGPT-4 `###Human: <Img><ImageHere></Img> {Q}
    /// ###Assistant: `, BLIP-2 LAVIS' zero-shot VQA `Question: {Q} Short answer:`.
    #[arg(long, conflicts_with = "prompt")]
    pub question: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub min_new_tokens: usize,
    #[arg(long, default_value_t = 1)]
    pub num_beams: usize,
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub length_penalty: f64,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f64,
    /// Print `{"ids": [...], "text": "..."}` instead of the text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Output<'a> {
    ids: &'a [u32],
    text: &'a str,
}

/// `template` with `{}` replaced by `question`, verbatim.
fn fill(template: &str, question: &str) -> String {
    template.replacen("{}", question, 1)
}

pub fn run(mut args: GenerateArgs) -> Result<()> {
    if crate::common::minigpt4_chat::is_parts_file(&args.model) {
        return super::generate_minigpt4::run(args);
    }
    if crate::common::llava_chat::is_llava_dir(&args.model) {
        return super::generate_llava::run(args);
    }
    if let Some(q) = args.question.take() {
        args.prompt = fill(eval::vqa::zero_shot::DEFAULT_PROMPT, &q);
    }
    anyhow::ensure!(
        args.image.len() == 1,
        "a BLIP-2 model takes exactly one --image (got {})",
        args.image.len()
    );
    // HF refuses these too: a penalty of 0 divides by zero, a negative one flips logit signs.
    anyhow::ensure!(
        args.repetition_penalty.is_finite() && args.repetition_penalty > 0.0,
        "--repetition-penalty must be a positive number (got {})",
        args.repetition_penalty
    );
    let gen = Blip2Generator::load(&args.model, &Device::Cpu)?;
    let cfg = qformer::llm::GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        min_new_tokens: args.min_new_tokens,
        num_beams: args.num_beams,
        length_penalty: args.length_penalty,
        repetition_penalty: args.repetition_penalty,
        ..gen.generation_config()
    };
    let ids = gen.generate(&args.image, &[args.prompt], &cfg)?;
    let ids = &ids[0];
    let text = gen.decode(ids)?;
    if args.json {
        println!("{}", serde_json::to_string(&Output { ids, text: &text })?);
    } else {
        println!("{text}");
    }
    Ok(())
}
