//! A BLIP-2 model as it lies in an HF Hub directory (config.json, model.safetensors or a sharded
//! index, tokenizer.json, preprocessor_config.json), optionally with a LAVIS stage-one `.pth`
//! on top and/or an LM head from a LAVIS-named safetensors file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use datasets::image::ImageProcessorConfig;
use datasets::text::TextTokenizer;
use qformer::model::Blip2Qformer;
use qformer::weights::{
    detect_parts, load, read_lavis_pth, read_lavis_safetensors, LoadOptions, TensorSet,
};

/// Where the weights come from.
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// HF Hub directory (gives the config, tokenizer, processor and at least the ViT).
    pub dir: PathBuf,
    /// LAVIS stage-one checkpoint replacing everything but the ViT (its `ln_vision` eps is 1e-5).
    pub lavis_checkpoint: Option<PathBuf>,
    /// `Qformer.cls.predictions.*` tensors replacing (or adding) the ITG head.
    pub lm_head: Option<PathBuf>,
}

pub struct LoadedDir {
    pub model: Blip2Qformer,
    pub processor: ImageProcessorConfig,
    pub tokenizer: TextTokenizer,
}

/// The Q-Former tokenizer: LLM directories keep it in `qformer_tokenizer/` next to the LLM's own.
fn tokenizer_path(dir: &Path) -> Result<PathBuf> {
    let nested = dir.join("qformer_tokenizer").join("tokenizer.json");
    if nested.is_file() {
        return Ok(nested);
    }
    let top = dir.join("tokenizer.json");
    if top.is_file() {
        return Ok(top);
    }
    bail!(
        "model directory {} has no tokenizer.json (nor qformer_tokenizer/tokenizer.json)",
        dir.display()
    )
}

pub fn load_model_dir(
    src: &ModelSource,
    text_max_length: usize,
    device: &Device,
) -> Result<LoadedDir> {
    let dir = &src.dir;
    if !dir.is_dir() {
        bail!("model directory {} does not exist", dir.display());
    }
    if !dir.join("config.json").is_file() {
        bail!("{} is not a model directory: it has no config.json", dir.display());
    }
    let processor_path = dir.join("preprocessor_config.json");
    let processor = ImageProcessorConfig::from_file(&processor_path)
        .with_context(|| format!("cannot read {}", processor_path.display()))?;
    let tokenizer = TextTokenizer::from_file(&tokenizer_path(dir)?, text_max_length)?;

    let (cfg, hf) = TensorSet::from_hf_dir(dir, device)?;
    let mut set = match &src.lavis_checkpoint {
        Some(pth) => {
            if !pth.is_file() {
                bail!("LAVIS checkpoint {} does not exist", pth.display());
            }
            // LAVIS saves only trainable tensors: the ViT comes from the HF directory.
            read_lavis_pth(pth, device)?.merge(hf.vision_encoder_only())?
        }
        // The LLM half of a Blip2ForConditionalGeneration directory is not part of the Q-Former model.
        None => hf.filter(|n| {
            !n.starts_with("language_model.") && !n.starts_with("language_projection.")
        }),
    };
    if let Some(head) = &src.lm_head {
        if !head.is_file() {
            bail!("LM head file {} does not exist", head.display());
        }
        let head_set = read_lavis_safetensors(head, device)?;
        if !head_set.names().any(|n| n.starts_with("cls.predictions.")) {
            bail!("{} holds no Qformer.cls.predictions.* tensors", head.display());
        }
        set = set.filter(|n| !n.starts_with("cls.predictions.")).merge(head_set)?;
    }
    let parts = detect_parts(&cfg, &set);
    let opts = LoadOptions { device: device.clone(), ..Default::default() };
    let loaded = load(&cfg, &set, parts, &opts)?;
    Ok(LoadedDir { model: loaded.model, processor, tokenizer })
}
