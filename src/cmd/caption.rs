//! `blip2 caption`: image captions with the LAVIS BLIP-2 caption settings (beams 5, at most 30
//! and at least 8 new tokens, prompt "a photo of"); MiniGPT-4 and LLaVA answer an instruction
//! in their own template with the same search settings.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;

use crate::common::chat::load_chat;
use crate::common::generator::Blip2Generator;

#[derive(Debug, Args)]
pub struct CaptionArgs {
    /// HF `Blip2ForConditionalGeneration` directory (OPT or T5 LLM), a LLaVA directory (HF or
    /// original), or a MiniGPT-4 parts file (`.toml`).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, num_args = 1.., required = true)]
    pub image: Vec<PathBuf>,
    /// BLIP-2: the text the caption continues (LAVIS `caption_coco_*`: "a photo of").
    /// MiniGPT-4: the instruction put into its template ("Describe this image in detail.").
    /// LLaVA: the instruction put into its template ("Provide a one-sentence caption for the
    /// provided image.").
    #[arg(long)]
    pub prompt: Option<String>,
    #[arg(long, default_value_t = 5)]
    pub num_beams: usize,
    #[arg(long, default_value_t = 30)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 8)]
    pub min_new_tokens: usize,
}

pub fn run(args: CaptionArgs) -> Result<()> {
    if let Some(chat) = load_chat(&args.model, &Device::Cpu)? {
        let instruction = args.prompt.as_deref().unwrap_or(chat.caption_instruction());
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
