//! `blip2 caption`: image captions with the LAVIS BLIP-2 caption settings (beams 5, at most 30
//! and at least 8 new tokens, prompt "a photo of").

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;

use crate::common::generator::Blip2Generator;
use crate::common::minigpt4_chat::{is_parts_file, MiniGpt4Chat};

#[derive(Debug, Args)]
pub struct CaptionArgs {
    /// HF `Blip2ForConditionalGeneration` directory (OPT or T5 LLM), or a MiniGPT-4 parts file
    /// (`.toml`).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, num_args = 1.., required = true)]
    pub image: Vec<PathBuf>,
    /// BLIP-2: the text the caption continues (LAVIS `caption_coco_*`: "a photo of").
    /// MiniGPT-4: the instruction put into its template ("Describe this image in detail.").
    #[arg(long)]
    pub prompt: Option<String>,
    #[arg(long, default_value_t = 5)]
    pub num_beams: usize,
    #[arg(long, default_value_t = 30)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 8)]
    pub min_new_tokens: usize,
}

/// MiniGPT-4's detailed-description instruction.
pub const MINIGPT4_CAPTION_INSTRUCTION: &str = "Describe this image in detail.";

pub fn run(args: CaptionArgs) -> Result<()> {
    if is_parts_file(&args.model) {
        let chat = MiniGpt4Chat::load(&args.model, &Device::Cpu)?;
        let instruction = args.prompt.as_deref().unwrap_or(MINIGPT4_CAPTION_INSTRUCTION);
        let prompt = chat.question_prompt(instruction);
        let cfg = chat.generation_config(qformer::llm::GenerationConfig {
            max_new_tokens: args.max_new_tokens,
            min_new_tokens: args.min_new_tokens,
            num_beams: args.num_beams,
            ..Default::default()
        });
        for image in &args.image {
            let ids = chat.generate(std::slice::from_ref(image), &prompt, &cfg)?;
            println!("{}", chat.answer(&ids)?);
        }
        return Ok(());
    }
    let prompt = args.prompt.clone().unwrap_or_else(|| "a photo of".to_string());
    let gen = Blip2Generator::load(&args.model, &Device::Cpu)?;
    let cfg = qformer::llm::GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        min_new_tokens: args.min_new_tokens,
        num_beams: args.num_beams,
        ..gen.generation_config()
    };
    for image in &args.image {
        let ids = gen.generate(std::slice::from_ref(image), std::slice::from_ref(&prompt), &cfg)?;
        // LAVIS strips the decoded caption.
        println!("{}", gen.decode(&ids[0])?.trim());
    }
    Ok(())
}
