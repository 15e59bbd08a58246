//! `blip2 eval loss`: the three stage-one losses (ITC, ITM, ITG) of one batch of image-text pairs,
//! image i paired with text i, as LAVIS `Blip2Qformer.forward` computes them in eval mode.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use qformer::model::ImageInput;
use qformer::objectives::{stage_one_losses, NegativeMode, ObjectiveConfig, PretrainBatch};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::common::inputs::{load_images, tokenize};
use crate::common::model_dir::ModelArgs;

/// Text length in stage-one training (LAVIS `max_txt_len`).
pub const TRAIN_TEXT_MAX_LENGTH: usize = 32;

#[derive(Debug, Args)]
pub struct LossArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Safetensors with `Qformer.cls.predictions.*` (the ITG head), replacing any in the checkpoint.
    #[arg(long)]
    pub lm_head: Option<PathBuf>,
    /// Batch images; image i is paired with text i.
    #[arg(long, num_args = 1.., required = true)]
    pub image: Vec<PathBuf>,
    /// Batch captions, one per image.
    #[arg(long, num_args = 1.., required = true)]
    pub text: Vec<String>,
    /// ITM negative selection: the most similar non-positive, or a multinomial draw (LAVIS training).
    #[arg(long, value_enum, default_value_t = NegativeArg::Hardest)]
    pub negatives: NegativeArg,
    /// Seed of the negative sampling (`--negatives sample`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print `{"itc": .., "itm": .., "itg": .., "total": ..}`.
    #[arg(long)]
    pub json: bool,
}

/// `qformer::objectives::NegativeMode` on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NegativeArg {
    Hardest,
    #[value(alias = "sampled")]
    Sample,
}

#[derive(Serialize)]
struct Losses {
    itc: f32,
    itm: f32,
    itg: f32,
    total: f32,
}

pub fn run(args: LossArgs) -> Result<()> {
    if args.image.len() != args.text.len() {
        bail!(
            "{} images but {} texts: eval loss pairs image i with text i",
            args.image.len(),
            args.text.len()
        );
    }
    if args.image.len() < 2 {
        bail!("eval loss needs at least 2 image-text pairs (ITM draws negatives from the batch)");
    }
    let (loaded, device) =
        args.model.load_with_heads(args.lm_head.clone(), TRAIN_TEXT_MAX_LENGTH)?;
    let model = &loaded.model;
    if model.lm_head().is_none() {
        bail!(
            "model {} has no ITG head (cls.predictions.*): pass --lm-head or a LAVIS checkpoint",
            args.model.dir.display()
        );
    }
    let pixels = load_images(&args.image, &loaded.processor, &device)?;
    let texts = tokenize(&loaded.tokenizer, &args.text, &device)?;
    let batch = PretrainBatch {
        image: ImageInput::Pixels(&pixels),
        input_ids: &texts.input_ids,
        attention_mask: &texts.mask,
        image_ids: None,
    };
    let cfg = ObjectiveConfig {
        negatives: match args.negatives {
            NegativeArg::Hardest => NegativeMode::Hardest,
            NegativeArg::Sample => NegativeMode::Sample,
        },
        bos_token_id: loaded.tokenizer.bos_id,
        pad_token_id: loaded.tokenizer.pad_id,
        ..Default::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let out = stage_one_losses(model, &batch, &cfg, false, &mut rng)?;
    let scalar = |t: &candle_core::Tensor| -> Result<f32> {
        Ok(t.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?)
    };
    let losses = Losses {
        itc: scalar(&out.itc)?,
        itm: scalar(&out.itm)?,
        itg: scalar(&out.itg)?,
        total: scalar(&out.total)?,
    };
    if args.json {
        println!("{}", serde_json::to_string(&losses)?);
    } else {
        println!(
            "itc {:.6}\nitm {:.6}\nitg {:.6}\ntotal {:.6}",
            losses.itc, losses.itm, losses.itg, losses.total
        );
    }
    Ok(())
}
