//! `blip2 caption`: image captions with the LAVIS BLIP-2 caption settings (beams 5, at most 30
//! and at least 8 new tokens, prompt "a photo of").

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;

use crate::common::generator::Blip2Generator;

#[derive(Debug, Args)]
pub struct CaptionArgs {
    /// HF `Blip2ForConditionalGeneration` directory (OPT or T5 LLM).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, num_args = 1.., required = true)]
    pub image: Vec<PathBuf>,
    /// LAVIS `caption_coco_*` prompt.
    #[arg(long, default_value = "a photo of")]
    pub prompt: String,
    #[arg(long, default_value_t = 5)]
    pub num_beams: usize,
    #[arg(long, default_value_t = 30)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 8)]
    pub min_new_tokens: usize,
}

pub fn run(args: CaptionArgs) -> Result<()> {
    let gen = Blip2Generator::load(&args.model, &Device::Cpu)?;
    let cfg = qformer::llm::GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        min_new_tokens: args.min_new_tokens,
        num_beams: args.num_beams,
        ..gen.generation_config()
    };
    for image in &args.image {
        let ids =
            gen.generate(std::slice::from_ref(image), std::slice::from_ref(&args.prompt), &cfg)?;
        // LAVIS strips the decoded caption.
        println!("{}", gen.decode(&ids[0])?.trim());
    }
    Ok(())
}
