//! The connector a run trains: how it is loaded, which template and image pipeline each stage uses,
//! and how the trained model is written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use datasets::image::clip::ClipImageProcessorConfig;
use datasets::image::{ImageProcessorConfig, TrainAugment};
use datasets::text::CaptionCleaner;
use datasets::LoaderConfig;
use qformer::connector::Connector;
use qformer::llava::original::{default_hub_cache, load_original_dir, ImageAspect};
use qformer::llava::LlavaForConditionalGeneration;
use qformer::minigpt4::{MiniGpt4, PartsFile};
use train::config::{ConnectorKind, Stage};
use train::init::named_vars;
use train::tasks::Template;
use train::RunConfig;

use crate::common::atomic::replace_dir;
use crate::common::model_dir::write_weights_dir;

use super::llava_layout::{
    absolute, fresh_llava, is_original_dir, original_config, read_json_value, save_original,
};

/// The files of an HF LLaVA directory besides its weights, copied into the trained one.
pub(super) const LLAVA_SIDE_FILES: &[&str] = &[
    "preprocessor_config.json",
    "processor_config.json",
    "generation_config.json",
    "chat_template.json",
    "chat_template.jinja",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
];

/// Where a LLaVA run's model comes from.
pub(super) enum LlavaSource {
    /// An HF LLaVA directory (`model.init_from`).
    Hf(PathBuf),
    /// An original haotian-liu LLaVA checkpoint (`model.init_from`), its tower resolved.
    Original { dir: PathBuf, tower: PathBuf, processor: PathBuf, pad: bool },
    /// A CLIP vision directory (`model.vision_weights`) and a LLaMA directory (`model.llm`), with
    /// a fresh projector: LLaVA's own start.
    Parts { vision: PathBuf, llm: PathBuf },
}

impl LlavaSource {
    /// The image processor's `preprocessor_config.json`.
    pub(super) fn processor(&self) -> PathBuf {
        match self {
            Self::Hf(dir) => dir.join("preprocessor_config.json"),
            Self::Original { processor, .. } => processor.clone(),
            Self::Parts { vision, .. } => vision.join("preprocessor_config.json"),
        }
    }

    /// The directory with the tokenizer.
    pub(super) fn tokenizer_dir(&self) -> &Path {
        match self {
            Self::Hf(dir) | Self::Original { dir, .. } => dir,
            Self::Parts { llm, .. } => llm,
        }
    }

    /// LLaVA-1.5's `image_aspect_ratio = "pad"`.
    pub(super) fn pads(&self) -> bool {
        matches!(self, Self::Original { pad: true, .. })
    }
}

/// The connector being trained.
pub(super) enum ConnectorModel {
    Llava {
        model: Box<LlavaForConditionalGeneration>,
        /// The trainable tensors (canonical names).
        varmap: VarMap,
        /// The constant ones (canonical names), written with the trained model.
        frozen: HashMap<String, Tensor>,
        source: LlavaSource,
    },
    MiniGpt4 {
        model: Box<MiniGpt4>,
    },
}

impl ConnectorModel {
    pub(super) fn load(cfg: &RunConfig, dev: &Device) -> Result<Self> {
        let m = &cfg.model;
        match m.connector.context("model.connector")? {
            ConnectorKind::Llava => {
                let (lcfg, tensors, source) = match (&m.init_from, &m.vision_weights, &m.llm) {
                    (Some(dir), _, _) if is_original_dir(dir) => {
                        let o = load_original_dir(dir, default_hub_cache().as_deref(), dev)
                            .with_context(|| format!("model.init_from {}", dir.display()))?;
                        let source = LlavaSource::Original {
                            dir: dir.clone(),
                            tower: o.tower_dir,
                            processor: o.preprocessor_config,
                            pad: o.config.image_aspect_ratio == ImageAspect::Pad,
                        };
                        (o.config.llava, o.tensors, source)
                    }
                    (Some(dir), _, _) => {
                        let (lcfg, _, tensors) = qformer::llava::load_dir(dir, dev)
                            .with_context(|| format!("model.init_from {}", dir.display()))?;
                        (lcfg, tensors, LlavaSource::Hf(dir.clone()))
                    }
                    (None, Some(vision), Some(llm)) => {
                        let (lcfg, tensors) = fresh_llava(vision, llm, cfg.seed, dev)?;
                        let source = LlavaSource::Parts { vision: vision.clone(), llm: llm.clone() };
                        (lcfg, tensors, source)
                    }
                    _ => bail!("model.connector = \"llava\" needs model.init_from (an HF LLaVA directory) or model.vision_weights (a CLIP directory) with model.llm (a LLaMA directory)"),
                };
                let src = source.processor();
                let train_llm = cfg.model.trains_llm(cfg.stage);
                let trainable = |name: &str| {
                    name.starts_with("multi_modal_projector.")
                        || (train_llm && name.starts_with("language_model."))
                };
                let varmap = VarMap::new();
                let model = LlavaForConditionalGeneration::with_trainable(
                    &lcfg, &tensors, &varmap, &trainable,
                )
                .with_context(|| format!("model.init_from {}", src.display()))?;
                let frozen = tensors.into_iter().filter(|(n, _)| !trainable(n)).collect();
                println!(
                    "LLaVA from {}: training the projector{}",
                    src.display(),
                    if train_llm { " and the LLM" } else { " (tower and LLM frozen)" }
                );
                Ok(Self::Llava { model: Box::new(model), varmap, frozen, source })
            }
            ConnectorKind::Minigpt4 => {
                let src = m.init_from.as_ref().context("model.init_from")?;
                let model = MiniGpt4::from_parts_file_trainable(src, dev)
                    .with_context(|| format!("model.init_from {}", src.display()))?;
                let vars = model.varmap().context("a trainable MiniGPT-4 has a VarMap")?;
                if model.parts().projection.is_none() {
                    let named = named_vars(vars)?;
                    let mut rng = train::rng::substream(cfg.seed, "init/llama_proj");
                    train::init::init_torch_linear(&named, &mut rng)?;
                }
                println!(
                    "MiniGPT-4 from {}: training llama_proj ({}), ViT, Q-Former and LLM frozen",
                    src.display(),
                    if model.parts().projection.is_some() { "continued" } else { "fresh" }
                );
                Ok(Self::MiniGpt4 { model: Box::new(model) })
            }
        }
    }

    pub(super) fn connector(&self) -> &dyn Connector {
        match self {
            Self::Llava { model, .. } => model.as_ref(),
            Self::MiniGpt4 { model } => model.as_ref(),
        }
    }

    pub(super) fn varmap(&self) -> &VarMap {
        match self {
            Self::Llava { varmap, .. } => varmap,
            Self::MiniGpt4 { model } => model.varmap().expect("built trainable"),
        }
    }

    pub(super) fn tokenizer_path(&self) -> PathBuf {
        match self {
            Self::Llava { source, .. } => source.tokenizer_dir().join("tokenizer.json"),
            Self::MiniGpt4 { model } => model.parts().llm.join("tokenizer.json"),
        }
    }

    /// The template of `stage`.
    pub(super) fn template(&self, stage: Stage) -> Result<Template> {
        Ok(match (self, stage) {
            (Self::Llava { .. }, Stage::Stage1) => Template::LlavaPlain,
            (Self::Llava { source, .. }, Stage::Stage2) => Template::LlavaV1 {
                legacy: tokenizer_is_legacy(&source.tokenizer_dir().join("tokenizer_config.json"))?,
            },
            (Self::MiniGpt4 { .. }, Stage::Stage1) => Template::MiniGpt4Caption,
            (Self::MiniGpt4 { model }, Stage::Stage2) => {
                let p = model.parts();
                Template::MiniGpt4Chat {
                    prompt_template: p.prompt_template.clone(),
                    image_marker: p.image_marker.clone(),
                    end_sym: p.end_sym.clone(),
                }
            }
        })
    }

    /// How the loader turns files into pixels and captions.
    pub(super) fn loader_config(&self, cfg: &RunConfig) -> Result<LoaderConfig> {
        let mut config = LoaderConfig {
            batch_size: cfg.batch.size,
            prefetch: cfg.data.prefetch_batches,
            workers: cfg.data.num_workers,
            shuffle: true,
            ..LoaderConfig::default()
        };
        match self {
            Self::Llava { source, .. } => {
                let path = source.processor();
                config.pad_to_square = source.pads();
                let clip = ClipImageProcessorConfig::from_file(&path)?;
                if !clip.do_center_crop {
                    bail!(
                        "{}: training needs do_center_crop (every image the same size)",
                        path.display()
                    );
                }
                config.clip = Some(clip);
                config.caption = CaptionCleaner::verbatim();
            }
            Self::MiniGpt4 { model } => {
                config.image = ImageProcessorConfig::from_file(&model.preprocessor_config_path())?;
                // MiniGPT-4's `Blip2ImageTrainProcessor`: a random resized crop, no flip.
                config.augment = cfg
                    .data
                    .augment
                    .then(|| TrainAugment { flip_probability: 0.0, ..TrainAugment::default() });
            }
        }
        Ok(config)
    }

    /// The trained model as the inference commands open it.
    pub(super) fn save(&self, dir: &Path) -> Result<()> {
        match self {
            Self::Llava { varmap, frozen, source: LlavaSource::Parts { vision, llm }, model } => {
                let config = original_config(llm, vision, model.config())?;
                save_original(dir, config, frozen, varmap, llm)
            }
            Self::Llava {
                varmap,
                frozen,
                source: LlavaSource::Original { dir: src, tower, .. },
                ..
            } => {
                let mut config = read_json_value(&src.join("config.json"))?;
                // The tower as found, so that the written directory finds it from anywhere.
                config["mm_vision_tower"] = absolute(tower)?.into();
                save_original(dir, config, frozen, varmap, src)
            }
            Self::Llava { varmap, frozen, source: LlavaSource::Hf(src), .. } => {
                let mut tensors = frozen.clone();
                for (name, var) in named_vars(varmap)? {
                    tensors.insert(name, var.as_tensor().clone());
                }
                let files: Vec<(PathBuf, PathBuf)> = LLAVA_SIDE_FILES
                    .iter()
                    .map(|f| (PathBuf::from(f), src.join(f)))
                    .filter(|(_, s)| s.is_file())
                    .collect();
                let config = read_json_value(&src.join("config.json"))?;
                write_weights_dir(dir, &[("config.json".into(), config)], &tensors, &files)
            }
            Self::MiniGpt4 { model } => {
                let vars = named_vars(model.varmap().expect("built trainable"))?;
                let tensors: HashMap<String, Tensor> =
                    vars.into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
                let p = model.parts();
                let parts = PartsFile {
                    qformer: absolute(&p.qformer)?,
                    vision: p.vision.as_deref().map(absolute).transpose()?,
                    llm: absolute(&p.llm)?,
                    projection: Some(PROJECTION_FILE.into()),
                    prompt_template: p.prompt_template.clone(),
                    end_sym: p.end_sym.clone(),
                    image_marker: p.image_marker.clone(),
                    max_txt_len: p.max_txt_len,
                };
                replace_dir(dir, |tmp| {
                    let weights = tmp.join(PROJECTION_FILE);
                    candle_core::safetensors::save(&tensors, &weights)
                        .with_context(|| format!("cannot write {}", weights.display()))?;
                    qformer::minigpt4::write(tmp.join(MINIGPT4_PARTS_FILE), &parts)?;
                    Ok(())
                })
            }
        }
    }
}

/// The trained MiniGPT-4's parts file and projection, inside `RUN_DIR/model`.
pub const MINIGPT4_PARTS_FILE: &str = "minigpt4.toml";
pub(super) const PROJECTION_FILE: &str = "llama_proj.safetensors";

/// `legacy` of a `tokenizer_config.json` (HF's LLaMA tokenizers default to the legacy
/// behaviour when it is unset or the file is absent).
pub(super) fn tokenizer_is_legacy(path: &Path) -> Result<bool> {
    if !path.is_file() {
        return Ok(true);
    }
    match read_json_value(path)?.get("legacy") {
        None | Some(serde_json::Value::Null) => Ok(true),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(other) => bail!("{}: `legacy` must be true or false, got {other}", path.display()),
    }
}
