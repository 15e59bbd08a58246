//! `blip2 generate` with a MiniGPT-4 parts file (`--model minigpt4.toml`), through
//! [`MiniGpt4Chat`].

use anyhow::Result;
use candle_core::Device;
use qformer::llm::GenerationConfig;
use serde::Serialize;

use super::generate::GenerateArgs;
use crate::common::chat::Chat;
use crate::common::minigpt4_chat::MiniGpt4Chat;

#[derive(Serialize)]
struct Output<'a> {
    ids: &'a [u32],
    text: &'a str,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    anyhow::ensure!(
        args.repetition_penalty.is_finite() && args.repetition_penalty > 0.0,
        "--repetition-penalty must be a positive number (got {})",
        args.repetition_penalty
    );
    let chat = MiniGpt4Chat::load(&args.model, &Device::Cpu)?;
    let prompt = match &args.question {
        Some(q) => chat.question_prompt(q),
        None => args.prompt.clone(),
    };
    let cfg = chat.generation_config(GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        min_new_tokens: args.min_new_tokens,
        num_beams: args.num_beams,
        length_penalty: args.length_penalty,
        repetition_penalty: args.repetition_penalty,
        ..Default::default()
    });
    let ids = chat.generate(&args.image, &prompt, &cfg)?;
    let text = chat.answer(&ids)?;
    if args.json {
        println!("{}", serde_json::to_string(&Output { ids: &ids, text: &text })?);
    } else {
        println!("{text}");
    }
    Ok(())
}
