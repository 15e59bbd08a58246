//! `blip2 generate` with a MiniGPT-4 parts file (`--model minigpt4.toml`), as MiniGPT-4's chat
//! does it: the prompt split on the image marker, each piece tokenized without special tokens,
//! one BOS in front, the images' `llama_proj(Q-Former)` rows spliced in at the markers, greedy
//! or beam search that stops after the end symbol (`###`) as well as at EOS.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use datasets::image::{decode_file, eval_transform, DecodeLimits, ImageProcessorConfig};
use qformer::connector::{splice, Connector, PadSide};
use qformer::llm::{generate_with_history, GenerationConfig};
use qformer::minigpt4::{minigpt4_pieces, MiniGpt4};
use serde::Serialize;
use tokenizers::Tokenizer;

use super::generate::GenerateArgs;

/// Whether `--model` names a MiniGPT-4 parts file rather than a model directory.
pub fn is_parts_file(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e == "toml")
}

#[derive(Serialize)]
struct Output<'a> {
    ids: &'a [u32],
    text: &'a str,
}

/// MiniGPT-4's question prompt: the template with `<Img>{marker}</Img> {question}` in its `{}`.
pub fn question_prompt(template: &str, marker: &str, question: &str) -> String {
    template.replacen("{}", &format!("<Img>{marker}</Img> {question}"), 1)
}

/// The token sequences MiniGPT-4 stops after: the end symbol as it tokenizes on its own (after
/// a space, `▁###`) and as it tokenizes glued to a preceding word (`###`), the two encodings
/// MiniGPT-4 lists for Vicuna.
pub fn stop_sequences(tokenizer: &Tokenizer, end_sym: &str) -> Result<Vec<Vec<u32>>> {
    let enc = |s: &str| -> Result<Vec<u32>> {
        Ok(tokenizer
            .encode(s, false)
            .map_err(|e| anyhow!("tokenizing the end symbol {end_sym:?}: {e}"))?
            .get_ids()
            .to_vec())
    };
    let alone = enc(end_sym)?;
    let word = enc("a")?;
    let glued = enc(&format!("a{end_sym}"))?;
    let mut out = vec![alone];
    if let Some(rest) = glued.strip_prefix(word.as_slice()) {
        if !rest.is_empty() && !out.contains(&rest.to_vec()) {
            out.push(rest.to_vec());
        }
    }
    Ok(out)
}

/// MiniGPT-4's answer text: everything before the end symbol, after the last `Assistant:`,
/// stripped.
fn answer_text(decoded: &str, end_sym: &str) -> String {
    let before = decoded.split(end_sym).next().unwrap_or("");
    before.rsplit("Assistant:").next().unwrap_or("").trim().to_string()
}

pub fn run(args: GenerateArgs) -> Result<()> {
    anyhow::ensure!(
        args.repetition_penalty.is_finite() && args.repetition_penalty > 0.0,
        "--repetition-penalty must be a positive number (got {})",
        args.repetition_penalty
    );
    let device = Device::Cpu;
    let model = MiniGpt4::from_parts_file(&args.model, &device)
        .with_context(|| format!("loading MiniGPT-4 from {}", args.model.display()))?;
    let parts = model.parts().clone();
    let prompt = match &args.question {
        Some(q) => question_prompt(&parts.prompt_template, &parts.image_marker, q),
        None => args.prompt.clone(),
    };
    let tok_path = parts.llm.join("tokenizer.json");
    let tokenizer = Tokenizer::from_file(&tok_path)
        .map_err(|e| anyhow!("reading tokenizer {}: {e}", tok_path.display()))?;
    let text_pieces: Vec<&str> = prompt.split(parts.image_marker.as_str()).collect();
    if text_pieces.len() - 1 != args.image.len() {
        bail!(
            "the prompt has {} {} marker(s) but {} --image file(s) were given",
            text_pieces.len() - 1,
            parts.image_marker,
            args.image.len()
        );
    }
    let ids = text_pieces
        .iter()
        .map(|p| {
            tokenizer
                .encode(*p, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| anyhow!("tokenizing prompt piece {p:?}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let llm = model.language_model();
    let bos = llm
        .config()
        .bos_token_id
        .as_ref()
        .and_then(|b| b.to_vec().first().copied())
        .ok_or_else(|| anyhow!("{}: config.json has no bos_token_id", parts.llm.display()))?;
    let rows = vec![minigpt4_pieces(bos, ids)];

    let processor = ImageProcessorConfig::from_file(&model.preprocessor_config_path())?;
    let mut pixels = Vec::new();
    let (mut h, mut w) = (processor.size.height, processor.size.width);
    for p in &args.image {
        let img = decode_file(p, DecodeLimits::default()).context("reading an input image")?;
        let t = eval_transform(&img, &processor);
        (h, w) = (t.height, t.width);
        pixels.extend(t.data);
    }
    let pv = Tensor::from_vec(pixels, (args.image.len(), 3, h, w), &device)?;
    let image_rows = model.image_embeds(&pv)?;
    let s = splice(&rows, &image_rows, llm, PadSide::Left)?;

    let (eos_token_ids, pad_token_id) =
        super::generate_llava::eos_and_pad(&parts.llm, llm.config())?;
    let cfg = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        min_new_tokens: args.min_new_tokens,
        num_beams: args.num_beams,
        length_penalty: args.length_penalty,
        repetition_penalty: args.repetition_penalty,
        eos_token_ids,
        pad_token_id,
        stop_sequences: stop_sequences(&tokenizer, &parts.end_sym)?,
    };
    // `generate(inputs_embeds=...)` without input ids: the penalty sees the new tokens only.
    let out = generate_with_history(llm, &s.embeds, &s.attention_mask, None, &cfg)?;
    let ids = &out[0];
    let decoded = tokenizer.decode(ids, true).map_err(|e| anyhow!("decoding ids {ids:?}: {e}"))?;
    let text = answer_text(&decoded, &parts.end_sym);
    if args.json {
        println!("{}", serde_json::to_string(&Output { ids, text: &text })?);
    } else {
        println!("{text}");
    }
    Ok(())
}
