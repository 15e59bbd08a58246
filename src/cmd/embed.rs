//! `blip2 embed`: normalized ITC embeddings of images (`[N, Q, E]`) and/or texts (`[N, E]`)
//! written to a safetensors file whose metadata names the inputs.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use qformer::model::ImageInput;

use super::score::EVAL_TEXT_MAX_LENGTH;
use crate::common::inputs::{load_images, tokenize};
use crate::common::model_dir::ModelArgs;

#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Images to embed -> tensor `image_embeds` [N, Q, E].
    #[arg(long, num_args = 1..)]
    pub image: Vec<PathBuf>,
    /// Texts to embed -> tensor `text_embeds` [N, E].
    #[arg(long, num_args = 1..)]
    pub text: Vec<String>,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: EmbedArgs) -> Result<()> {
    if args.image.is_empty() && args.text.is_empty() {
        bail!("nothing to embed: give --image and/or --text");
    }
    let (loaded, device) = args.model.load_with_heads(None, EVAL_TEXT_MAX_LENGTH)?;
    let model = &loaded.model;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut metadata = HashMap::new();
    metadata.insert("model".to_string(), args.model.dir.display().to_string());
    if let Some(pth) = &args.model.lavis_checkpoint {
        metadata.insert("lavis_checkpoint".to_string(), pth.display().to_string());
    }
    if !args.image.is_empty() {
        let pixels = load_images(&args.image, &loaded.processor, &device)?;
        let feats = model
            .encode_image(ImageInput::Pixels(&pixels))?
            .image_feats
            .ok_or_else(|| anyhow::anyhow!("model returned no ITC image features"))?;
        tensors.push(("image_embeds".into(), feats.to_device(&Device::Cpu)?));
        let names: Vec<String> = args.image.iter().map(|p| p.display().to_string()).collect();
        metadata.insert("images".to_string(), serde_json::to_string(&names)?);
    }
    if !args.text.is_empty() {
        let texts = tokenize(&loaded.tokenizer, &args.text, &device)?;
        let feat = model.encode_text(&texts.input_ids, &texts.mask)?.text_feat;
        tensors.push(("text_embeds".into(), feat.to_device(&Device::Cpu)?));
        metadata.insert("texts".to_string(), serde_json::to_string(&args.text)?);
    }
    safetensors::tensor::serialize_to_file(tensors, Some(metadata), &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    Ok(())
}
