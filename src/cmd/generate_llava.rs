//! `blip2 generate` with an HF `LlavaForConditionalGeneration` directory, as transformers 4.57's
//! `LlavaProcessor` + `generate` do it: `CLIPImageProcessor` pixels, the prompt tokenized with
//! the model's `tokenizer.json` (BOS added), each `<image>` id expanded to the image's feature
//! tokens, the projected features scattered into those positions, then greedy or beam search.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use datasets::image::{clip_transform, decode_file, ClipImageProcessorConfig, DecodeLimits};
use qformer::llava::{load_dir, LlavaForConditionalGeneration};
use qformer::llm::{generate_with_history, GenerationConfig};
use qformer::weights::frozen_var_builder;
use serde::Serialize;
use tokenizers::Tokenizer;

use super::generate::GenerateArgs;
use crate::common::generation_ids::eos_and_pad;

/// Whether `dir/config.json` describes a LLaVA checkpoint (`model_type` "llava" or
/// `architectures` naming `LlavaForConditionalGeneration`). An unreadable config is not LLaVA
/// (the BLIP-2 loader then reports it).
pub fn is_llava_dir(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else { return false };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return false };
    v.get("model_type").and_then(|t| t.as_str()) == Some("llava")
        || v.get("architectures")
            .and_then(|a| a.as_array())
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some("LlavaForConditionalGeneration")))
}

#[derive(Serialize)]
struct Output<'a> {
    ids: &'a [u32],
    text: &'a str,
    /// The processor's `input_ids`: BOS + prompt with every `<image>` expanded.
    input_ids: &'a [u32],
}

/// The LlavaProcessor's `input_ids`: `ids` (tokenized with BOS) with each `image_token` id
/// repeated `per_image` times. Errors when the marker count differs from `n_images`.
pub fn expand_image_tokens(
    ids: &[u32],
    image_token: u32,
    per_image: usize,
    n_images: usize,
) -> Result<Vec<u32>> {
    let markers = ids.iter().filter(|&&t| t == image_token).count();
    if markers != n_images {
        bail!(
            "the prompt has {markers} <image> marker(s) but {n_images} --image file(s) were given"
        );
    }
    Ok(ids
        .iter()
        .flat_map(|&t| {
            let n = if t == image_token { per_image } else { 1 };
            std::iter::repeat_n(t, n)
        })
        .collect())
}

pub fn run(args: GenerateArgs) -> Result<()> {
    anyhow::ensure!(
        args.repetition_penalty.is_finite() && args.repetition_penalty > 0.0,
        "--repetition-penalty must be a positive number (got {})",
        args.repetition_penalty
    );
    let dir = &args.model;
    let device = Device::Cpu;

    // Tokenize first: a marker/image count mismatch needs no weights.
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = Tokenizer::from_file(&tok_path)
        .map_err(|e| anyhow!("reading tokenizer {}: {e}", tok_path.display()))?;
    let cfg = qformer::llava::LlavaConfig::from_file(dir.join("config.json"))
        .with_context(|| format!("loading LLaVA config from {}", dir.display()))?;
    let enc = tokenizer
        .encode(args.prompt.as_str(), true)
        .map_err(|e| anyhow!("tokenizing prompt {:?}: {e}", args.prompt))?;
    let input_ids = expand_image_tokens(
        enc.get_ids(),
        cfg.image_token_index,
        cfg.tokens_per_image(),
        args.image.len(),
    )?;

    let proc_path = dir.join("preprocessor_config.json");
    let processor = ClipImageProcessorConfig::from_file(&proc_path)?;
    let mut pixels = Vec::new();
    let (mut h, mut w) = (0, 0);
    for p in &args.image {
        let img = decode_file(p, DecodeLimits::default()).context("reading an input image")?;
        let t = clip_transform(&img, &processor);
        (h, w) = (t.height, t.width);
        pixels.extend(t.data);
    }

    let (cfg, _, tensors) = load_dir(dir, &device)
        .with_context(|| format!("loading LLaVA model directory {}", dir.display()))?;
    // Matrices stay in the checkpoint's dtype (bf16/f16 halves a 7B model); activations are f32.
    let vb = frozen_var_builder(tensors, DType::F32, &device);
    let model = LlavaForConditionalGeneration::load(vb, &cfg)
        .with_context(|| format!("building LLaVA from {}", dir.display()))?;
    let (eos_token_ids, pad_token_id) = eos_and_pad(dir, &cfg.text_config)?;

    let ids_t = Tensor::from_vec(input_ids.clone(), (1, input_ids.len()), &device)?;
    let embeds = if args.image.is_empty() {
        let empty = Tensor::zeros((0, cfg.text_config.hidden_size), DType::F32, &device)?;
        model.merge_image_features(&ids_t, &empty)?
    } else {
        let pv = Tensor::from_vec(pixels, (args.image.len(), 3, h, w), &device)?;
        let feats = model.image_features(&pv)?;
        model.merge_image_features(&ids_t, &feats)?
    };
    let mask = Tensor::ones((1, input_ids.len()), DType::U32, &device)?;
    let gen_cfg = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        min_new_tokens: args.min_new_tokens,
        num_beams: args.num_beams,
        length_penalty: args.length_penalty,
        repetition_penalty: args.repetition_penalty,
        eos_token_ids,
        pad_token_id,
        stop_sequences: Vec::new(),
    };
    // HF's repetition penalty sees the whole `input_ids` (image tokens included).
    let history = vec![input_ids.clone()];
    let out =
        generate_with_history(model.language_model(), &embeds, &mask, Some(&history), &gen_cfg)?;
    let ids = &out[0];
    let text = tokenizer.decode(ids, true).map_err(|e| anyhow!("decoding ids {ids:?}: {e}"))?;
    if args.json {
        println!("{}", serde_json::to_string(&Output { ids, text: &text, input_ids: &input_ids })?);
    } else {
        println!("{text}");
    }
    Ok(())
}
