//! `blip2 generate` with a LLaVA directory (HF `LlavaForConditionalGeneration` in either tensor
//! naming, or an original haotian-liu LLaVA checkpoint), through [`LlavaChat`]: the prompt
//! tokenized as the layout's own code does it, the images' projected CLIP features spliced in
//! at the markers, then greedy or beam search until EOS.

use anyhow::Result;
use candle_core::Device;
use qformer::llm::GenerationConfig;
use serde::Serialize;

use super::generate::GenerateArgs;
use crate::common::chat::Chat;
use crate::common::llava_chat::{LlavaChat, LlavaSpec};

#[derive(Serialize)]
struct Output<'a> {
    ids: &'a [u32],
    text: &'a str,
    /// HF: the processor's `input_ids` (BOS + prompt with every `<image>` expanded).
    #[serde(skip_serializing_if = "Option::is_none")]
    input_ids: Option<&'a [u32]>,
    /// Original LLaVA: `tokenizer_image_token`'s ids, -200 where each image goes.
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_ids: Option<&'a [i64]>,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    anyhow::ensure!(
        args.repetition_penalty.is_finite() && args.repetition_penalty > 0.0,
        "--repetition-penalty must be a positive number (got {})",
        args.repetition_penalty
    );
    let device = Device::Cpu;
    // Tokenize first: a marker/image count mismatch needs no weights.
    let spec = LlavaSpec::read(&args.model)?;
    let text = match &args.question {
        Some(q) => spec.question_prompt(q),
        None => args.prompt.clone(),
    };
    let prompt = spec.prompt(&text, args.image.len())?;
    let chat = LlavaChat::from_spec(spec, &device)?;
    let cfg = chat.generation_config(GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        min_new_tokens: args.min_new_tokens,
        num_beams: args.num_beams,
        length_penalty: args.length_penalty,
        repetition_penalty: args.repetition_penalty,
        ..Default::default()
    });
    let ids = chat.generate_prompt(&prompt, &args.image, &cfg)?;
    let text = chat.decode(&ids)?;
    if args.json {
        let out = Output {
            ids: &ids,
            text: &text,
            input_ids: prompt.input_ids.as_deref(),
            prompt_ids: prompt.prompt_ids.as_deref(),
        };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!("{text}");
    }
    Ok(())
}
