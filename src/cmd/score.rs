//! `blip2 score`: ITC similarity and ITM match probability for every image x text pair.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::{DType, Tensor, D};
use clap::Args;
use qformer::model::{itc_similarity, ImageInput};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::common::inputs::{load_images, to_rows, tokenize};
use crate::common::model_dir::ModelArgs;

/// Text length at evaluation (LAVIS retrieval `max_txt_len`).
pub const EVAL_TEXT_MAX_LENGTH: usize = 35;

#[derive(Debug, Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Images to score (any number).
    #[arg(long, num_args = 1.., required = true)]
    pub image: Vec<PathBuf>,
    /// Texts to score against every image.
    #[arg(long, num_args = 1.., required = true)]
    pub text: Vec<String>,
    /// Print one JSON object `{"itc": [[..]], "itm": [[..]]}` (rows: images, columns: texts).
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Scores {
    itc: Vec<Vec<f32>>,
    itm: Vec<Vec<f32>>,
}

pub fn run(args: ScoreArgs) -> Result<()> {
    let (loaded, device) = args.model.load_with_heads(None, EVAL_TEXT_MAX_LENGTH)?;
    let model = &loaded.model;
    let pixels = load_images(&args.image, &loaded.processor, &device)?;
    let texts = tokenize(&loaded.tokenizer, &args.text, &device)?;

    let image = model.encode_image(ImageInput::Pixels(&pixels))?;
    let text = model.encode_text(&texts.input_ids, &texts.mask)?;
    let image_feats = image
        .image_feats
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("model returned no ITC image features"))?;
    let itc = itc_similarity(image_feats, &text.text_feat)?;

    // ITM: one bidirectional pass per image over all texts.
    let n_text = args.text.len();
    let mut itm = Vec::with_capacity(args.image.len());
    for i in 0..args.image.len() {
        let embeds = image.image_embeds.narrow(0, i, 1)?;
        let (_, n, d) = embeds.dims3()?;
        let embeds = embeds.broadcast_as((n_text, n, d))?.contiguous()?;
        let logits = model.itm_logits_t(
            &embeds,
            &texts.input_ids,
            &texts.mask,
            false,
            &mut ChaCha8Rng::seed_from_u64(0),
        )?;
        let prob = candle_nn::ops::softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?
            .narrow(1, 1, 1)?
            .squeeze(1)?;
        itm.push(prob);
    }
    let itm = Tensor::stack(&itm, 0)?;

    let scores = Scores { itc: to_rows(&itc)?, itm: to_rows(&itm)? };
    if args.json {
        println!("{}", serde_json::to_string(&scores)?);
    } else {
        print_table(&args.image, &args.text, &scores);
    }
    Ok(())
}

fn print_table(images: &[PathBuf], texts: &[String], scores: &Scores) {
    println!("{:<6} {:<6} {:>8} {:>8}  text", "image", "text", "itc", "itm");
    for (i, path) in images.iter().enumerate() {
        println!("image {i}: {}", path.display());
        for (j, text) in texts.iter().enumerate() {
            println!(
                "{:<6} {:<6} {:>8.4} {:>8.4}  {}",
                i, j, scores.itc[i][j], scores.itm[i][j], text
            );
        }
    }
}
