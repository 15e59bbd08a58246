//! `blip2 pretrain` with `model.connector`: LLaVA's or MiniGPT-4's two stages through the one
//! trainer.
//!
//! - LLaVA (`model.init_from` = an HF LLaVA directory): stage 1 trains `multi_modal_projector`
//!   on captions with the `plain` template; stage 2 trains the projector and the LLM on
//!   conversations with the `v1` template (`model.train_llm = false` keeps the LLM frozen).
//!   Images go through the directory's CLIP image processor, never augmented.
//! - MiniGPT-4 (`model.init_from` = a parts TOML): `llama_proj` trains in both stages; stage 1
//!   on captions, stage 2 on conversations in `###Human: ... ###Assistant: `. Images go through
//!   the BLIP-2 directory's processor, with MiniGPT-4's random resized crop (no flip) unless
//!   `data.augment = false`.
//!
//! Every sample is tokenized once before the run: those that cannot be read (no image marker,
//! LLaVA's tokenization mismatch, too long) are left out and counted, so that no step meets
//! one. The trained model is written as the inference commands open it: a LLaVA directory
//! (same layout and files as the one it started from), or a MiniGPT-4 directory holding
//! `minigpt4.toml` and `llama_proj.safetensors`.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use datasets::formats::{
    conversation_items, read_conversations, read_instruction_prompts, Conversation,
};
use datasets::image::clip::ClipImageProcessorConfig;
use datasets::image::{DecodeLimits, ImageProcessorConfig, TrainAugment};
use datasets::text::{CaptionCleaner, Padding};
use datasets::{ImageTextBatch, LoaderConfig, LoaderState};
use qformer::connector::{Connector, Piece};
use qformer::llava::original::{
    default_hub_cache, is_original_config, load_original_dir, ImageAspect,
};
use qformer::llava::{LlavaConfig, LlavaForConditionalGeneration, NamingScheme};
use qformer::minigpt4::{MiniGpt4, PartsFile};
use qformer::weights::TensorSet;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use train::config::{ConnectorKind, Stage};
use train::init::{init_torch_linear, named_vars};
use train::tasks::{ConnectorMicro, ConnectorTask, Template, TemplateTokenizer, TrainText};
use train::{Extras, ParamStore, RunConfig, RunSummary, Settings};

use super::data::{caption_items, CaptionData, LoaderBatches};
use super::{model_error, pixels, PretrainArgs};
use crate::common::atomic::replace_dir;
use crate::common::model_dir::write_weights_dir;

/// The files of an HF LLaVA directory besides its weights, copied into the trained one.
const LLAVA_SIDE_FILES: &[&str] = &[
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
enum LlavaSource {
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
    fn processor(&self) -> PathBuf {
        match self {
            Self::Hf(dir) => dir.join("preprocessor_config.json"),
            Self::Original { processor, .. } => processor.clone(),
            Self::Parts { vision, .. } => vision.join("preprocessor_config.json"),
        }
    }

    /// The directory with the tokenizer.
    fn tokenizer_dir(&self) -> &Path {
        match self {
            Self::Hf(dir) | Self::Original { dir, .. } => dir,
            Self::Parts { llm, .. } => llm,
        }
    }

    /// LLaVA-1.5's `image_aspect_ratio = "pad"`.
    fn pads(&self) -> bool {
        matches!(self, Self::Original { pad: true, .. })
    }
}

/// The connector being trained.
enum ConnectorModel {
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
    fn load(cfg: &RunConfig, dev: &Device) -> Result<Self> {
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

    fn connector(&self) -> &dyn Connector {
        match self {
            Self::Llava { model, .. } => model.as_ref(),
            Self::MiniGpt4 { model } => model.as_ref(),
        }
    }

    fn varmap(&self) -> &VarMap {
        match self {
            Self::Llava { varmap, .. } => varmap,
            Self::MiniGpt4 { model } => model.varmap().expect("built trainable"),
        }
    }

    fn tokenizer_path(&self) -> PathBuf {
        match self {
            Self::Llava { source, .. } => source.tokenizer_dir().join("tokenizer.json"),
            Self::MiniGpt4 { model } => model.parts().llm.join("tokenizer.json"),
        }
    }

    /// The template of `stage`.
    fn template(&self, stage: Stage) -> Result<Template> {
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
    fn loader_config(&self, cfg: &RunConfig) -> Result<LoaderConfig> {
        let mut config = LoaderConfig {
            batch_size: cfg.batch.size,
            prefetch: cfg.data.prefetch_batches,
            workers: cfg.data.num_workers,
            shuffle: true,
            augment: None,
            image: ImageProcessorConfig::default(),
            clip: None,
            pad_to_square: false,
            caption: CaptionCleaner::default(),
            padding: Padding::Longest,
            limits: DecodeLimits::default(),
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
    fn save(&self, dir: &Path) -> Result<()> {
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
                let path = src.join("config.json");
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let mut config: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{}: invalid JSON", path.display()))?;
                // The tower as found, so that the written directory finds it from anywhere.
                let tower = std::fs::canonicalize(tower)
                    .with_context(|| format!("cannot resolve {}", tower.display()))?;
                config["mm_vision_tower"] = tower.display().to_string().into();
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
                let config_path = src.join("config.json");
                let text = std::fs::read_to_string(&config_path)
                    .with_context(|| format!("reading {}", config_path.display()))?;
                let config: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{}: invalid JSON", config_path.display()))?;
                write_weights_dir(dir, &[("config.json".into(), config)], &tensors, &files)
            }
            Self::MiniGpt4 { model } => {
                let vars = named_vars(model.varmap().expect("built trainable"))?;
                let tensors: HashMap<String, Tensor> =
                    vars.into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
                let p = model.parts();
                let absolute = |path: &Path| -> Result<String> {
                    let abs = std::fs::canonicalize(path)
                        .with_context(|| format!("cannot resolve {}", path.display()))?;
                    Ok(abs.display().to_string())
                };
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

/// An HF LLaVA model of the CLIP tower in `vision` (a `CLIPVisionModel` or `CLIPModel`
/// directory), the LLaMA of `llm` and a fresh projector as LLaVA-1.5 starts its stage 1:
/// `mlp2x_gelu` in `torch.nn.Linear`'s init, features of the second-to-last layer without the
/// class token.
fn fresh_llava(
    vision: &Path,
    llm: &Path,
    seed: u64,
    dev: &Device,
) -> Result<(LlavaConfig, HashMap<String, Tensor>)> {
    let read = |path: PathBuf| -> Result<serde_json::Value> {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))
    };
    let clip = read(vision.join("config.json"))?;
    let mut vision_config = clip.get("vision_config").cloned().unwrap_or(clip);
    vision_config["model_type"] = "clip_vision_model".into();
    let mut text_config = read(llm.join("config.json"))?;
    text_config["model_type"] = "llama".into();
    let vocab = text_config["vocab_size"].as_u64().unwrap_or(0);
    let config = serde_json::json!({
        "model_type": "llava",
        "vision_config": vision_config,
        "text_config": text_config,
        // Training splices the image at its piece, never through this id.
        "image_token_index": vocab,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "multimodal_projector_bias": true,
    });
    let lcfg = LlavaConfig::from_json(config).with_context(|| {
        format!("model.vision_weights {} with model.llm {}", vision.display(), llm.display())
    })?;
    let mut tensors = HashMap::new();
    let tower = TensorSet::from_hf_weights(vision, dev)
        .with_context(|| format!("reading model.vision_weights {}", vision.display()))?;
    for (name, t) in tower.into_map() {
        if name.starts_with("vision_model.") {
            tensors.insert(format!("vision_tower.{name}"), t);
        }
    }
    let lm = TensorSet::from_hf_weights(llm, dev)
        .with_context(|| format!("reading model.llm {}", llm.display()))?;
    for (name, t) in lm.into_map() {
        tensors.insert(format!("language_model.{name}"), t);
    }
    let (d_in, d_out) = (lcfg.projector_in_dim(), lcfg.text_config.hidden_size);
    let projector = VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&projector, DType::F32, dev);
    for (layer, fan_in) in [("linear_1", d_in), ("linear_2", d_out)] {
        vb.get((d_out, fan_in), &format!("multi_modal_projector.{layer}.weight"))?;
        vb.get(d_out, &format!("multi_modal_projector.{layer}.bias"))?;
    }
    let named = named_vars(&projector)?;
    init_torch_linear(&named, &mut train::rng::substream(seed, "init/multi_modal_projector"))?;
    for (name, var) in named {
        tensors.insert(name, var.as_tensor().detach());
    }
    qformer::llava::check_tensors(&lcfg, NamingScheme::Legacy, &tensors).with_context(|| {
        format!("model.vision_weights {} with model.llm {}", vision.display(), llm.display())
    })?;
    Ok((lcfg, tensors))
}

/// An original LLaVA checkpoint: `config`, the tensors under their original names (the tower
/// left in its own directory), the tokenizer files of `tokenizer_dir`.
fn save_original(
    dir: &Path,
    config: serde_json::Value,
    frozen: &HashMap<String, Tensor>,
    varmap: &VarMap,
    tokenizer_dir: &Path,
) -> Result<()> {
    let mut tensors = HashMap::new();
    let vars: Vec<(String, Tensor)> =
        named_vars(varmap)?.into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
    // A `linear` projector is one `nn.Linear`, not a `Sequential`: no index in its names.
    let single = !vars
        .iter()
        .map(|(n, _)| n)
        .chain(frozen.keys())
        .any(|n| n.starts_with("multi_modal_projector.linear_2."));
    for (name, t) in frozen.clone().into_iter().chain(vars) {
        if let Some(original) = canonical_to_original(&name) {
            let original = match original.strip_prefix("model.mm_projector.0.") {
                Some(param) if single => format!("model.mm_projector.{param}"),
                _ => original,
            };
            tensors.insert(original, t);
        }
    }
    let tokenizer_file = |f: &&&str| {
        f.starts_with("tokenizer") || f.starts_with("special") || f.starts_with("added")
    };
    let files: Vec<(PathBuf, PathBuf)> = LLAVA_SIDE_FILES
        .iter()
        .filter(tokenizer_file)
        .map(|f| (PathBuf::from(f), tokenizer_dir.join(f)))
        .filter(|(_, s)| s.is_file())
        .collect();
    write_weights_dir(dir, &[("config.json".into(), config)], &tensors, &files)
}

/// Whether `dir` holds an original LLaVA checkpoint (not an HF LLaVA directory).
fn is_original_dir(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| is_original_config(&v))
}

/// The name of a canonical tensor in an original LLaVA checkpoint (`model.*`, `lm_head.*`,
/// `model.mm_projector.{0,2}.*`); `None` for the tower, which LLaVA keeps in its own directory.
fn canonical_to_original(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("language_model.") {
        return Some(rest.to_string());
    }
    let rest = name.strip_prefix("multi_modal_projector.linear_")?;
    let (k, param) = rest.split_once('.')?;
    let k: usize = k.parse().ok()?;
    // `nn.Sequential(Linear, GELU, Linear)`: the linears sit at the even indices.
    Some(format!("model.mm_projector.{}.{param}", 2 * (k - 1)))
}

/// The `config.json` of an original LLaVA checkpoint (`LlavaLlamaForCausalLM`): the LLaMA's
/// own config with the multimodal keys LLaVA-1.5 writes, the tower named by its absolute path.
fn original_config(llm: &Path, vision: &Path, lcfg: &LlavaConfig) -> Result<serde_json::Value> {
    let path = llm.join("config.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut config: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    let tower = std::fs::canonicalize(vision)
        .with_context(|| format!("cannot resolve {}", vision.display()))?;
    let obj =
        config.as_object_mut().with_context(|| format!("{}: not a JSON object", path.display()))?;
    for (key, value) in [
        ("architectures", serde_json::json!(["LlavaLlamaForCausalLM"])),
        ("model_type", "llava_llama".into()),
        ("mm_vision_tower", tower.display().to_string().into()),
        ("mm_projector_type", "mlp2x_gelu".into()),
        ("mm_hidden_size", lcfg.vision_config.hidden_size.into()),
        ("mm_vision_select_layer", (-2).into()),
        ("mm_vision_select_feature", "patch".into()),
        ("image_aspect_ratio", "square".into()),
        ("mm_use_im_start_end", false.into()),
        ("mm_use_im_patch_token", false.into()),
        ("use_mm_proj", true.into()),
    ] {
        obj.insert(key.into(), value);
    }
    Ok(config)
}

/// The trained MiniGPT-4's parts file and projection, inside `RUN_DIR/model`.
pub const MINIGPT4_PARTS_FILE: &str = "minigpt4.toml";
const PROJECTION_FILE: &str = "llama_proj.safetensors";

/// `legacy` of a `tokenizer_config.json` (HF's LLaMA tokenizers default to the legacy
/// behaviour when it is unset or the file is absent).
fn tokenizer_is_legacy(path: &Path) -> Result<bool> {
    if !path.is_file() {
        return Ok(true);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    match v.get("legacy") {
        None | Some(serde_json::Value::Null) => Ok(true),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(other) => bail!("{}: `legacy` must be true or false, got {other}", path.display()),
    }
}

/// The run's samples: conversations (`data.conversations`) or captions, these with
/// MiniGPT-4's instructions in its stage 2.
struct Samples {
    data: CaptionData,
    /// Indexed by the items' `image_id` when the data is conversations.
    conversations: Option<Vec<Conversation>>,
    /// `data.instructions`: a batch's captions answer one of these, drawn by [`Self::draw`].
    instructions: Option<Vec<String>>,
    seed: u64,
}

impl Samples {
    fn read(cfg: &RunConfig, run_root: &Path, marker: Option<&str>) -> Result<Self> {
        let seed = cfg.seed;
        let Some(path) = &cfg.data.conversations else {
            let instructions = match (&cfg.data.instructions, marker) {
                (Some(p), Some(m)) => Some(read_instruction_prompts(p, m)?),
                (Some(_), None) => bail!("data.instructions: only MiniGPT-4 reads a prompt list"),
                (None, _) => None,
            };
            let data = caption_items(cfg, run_root)?;
            return Ok(Self { data, conversations: None, instructions, seed });
        };
        let conversations = read_conversations(path)?;
        let folder = match &cfg.data.images {
            Some(f) => f.clone(),
            None => path.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        let (items, text_only) = conversation_items(&conversations, &folder);
        if text_only > 0 {
            println!("{}: {text_only} records without an image left out", path.display());
        }
        let data = CaptionData { items, sources: None };
        Ok(Self { data, conversations: Some(conversations), instructions: None, seed })
    }

    /// The instruction of a batch, as MiniGPT-4 draws one per batch: from the run seed and the
    /// batch's place in its epoch, so that a resumed run draws the same.
    fn draw(&self, cursor: &LoaderState) -> Option<&str> {
        let prompts = self.instructions.as_ref()?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x6d69_6e69_6770_7434);
        rng.set_stream(cursor.epoch);
        rng.set_word_pos((cursor.position as u128) << 4);
        Some(&prompts[rng.random_range(0..prompts.len())])
    }

    /// Sample `k` of a loader batch.
    fn text<'a>(&'a self, b: &'a ImageTextBatch, k: usize) -> TrainText<'a> {
        match (&self.conversations, self.draw(&b.state_after)) {
            (Some(c), _) => TrainText::Conversation(&c[b.image_ids[k] as usize].turns),
            (None, Some(instruction)) => {
                TrainText::Instructed { instruction, answer: &b.captions[k] }
            }
            (None, None) => TrainText::Caption(&b.captions[k]),
        }
    }

    /// Leaves out the items whose text the template cannot read, saying how many and why.
    fn keep_readable(&mut self, tok: &TemplateTokenizer, cleaner: &CaptionCleaner) -> Result<()> {
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut first: Option<String> = None;
        let before = self.data.items.len();
        let conversations = self.conversations.as_deref();
        // Every prompt of the list reads the same way: the first stands for them all.
        let instruction = self.instructions.as_ref().map(|p| p[0].as_str());
        self.data.retain(|item| {
            let caption;
            let text = match (conversations, instruction) {
                (Some(c), _) => TrainText::Conversation(&c[item.image_id as usize].turns),
                (None, Some(instruction)) => {
                    caption = cleaner.clean(&item.caption);
                    TrainText::Instructed { instruction, answer: &caption }
                }
                (None, None) => {
                    caption = cleaner.clean(&item.caption);
                    TrainText::Caption(&caption)
                }
            };
            match tok.pieces(text) {
                Ok(_) => true,
                Err(reason) => {
                    first.get_or_insert_with(|| format!("{}: {reason}", item.key));
                    let kind = reason.split(':').next().unwrap_or(&reason).to_string();
                    *reasons.entry(kind).or_insert(0) += 1;
                    false
                }
            }
        });
        let left_out = before - self.data.items.len();
        if left_out > 0 {
            let counts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} × {r}")).collect();
            eprintln!(
                "warning: {left_out} of {before} samples left out ({}); first: {}",
                counts.join(", "),
                first.unwrap_or_default()
            );
        }
        if self.data.items.is_empty() {
            bail!(
                "no sample of the training data can be read by the {:?} template",
                tok.template()
            );
        }
        Ok(())
    }
}

pub fn run(cfg: &RunConfig, root: &Path, args: &PretrainArgs, dev: &Device) -> Result<RunSummary> {
    let model = ConnectorModel::load(cfg, dev)?;
    let connector = model.connector();
    let template = model.template(cfg.stage)?;
    let tokenizer = TemplateTokenizer::from_file(
        &model.tokenizer_path(),
        template,
        cfg.data.max_seq_len as usize,
        cfg.data.max_txt_len as usize,
        connector.tokens_per_image(),
    )?;
    let loader_config = model.loader_config(cfg)?;
    let marker = match &model {
        ConnectorModel::MiniGpt4 { model } => Some(model.parts().image_marker.clone()),
        ConnectorModel::Llava { .. } => None,
    };
    let mut samples = Samples::read(cfg, root, marker.as_deref())?;
    samples.keep_readable(&tokenizer, &loader_config.caption)?;
    let n = samples.data.items.len();
    let data =
        std::mem::replace(&mut samples.data, CaptionData { items: Vec::new(), sources: None });
    let loader = data.into_loader(None, loader_config)?;

    let build = |b: &ImageTextBatch, r: Range<usize>| -> Result<ConnectorMicro> {
        let rows = r
            .clone()
            .map(|k| {
                tokenizer
                    .pieces(samples.text(b, k))
                    .map_err(|e| anyhow!("sample {}: {e}", b.keys[k]))
            })
            .collect::<Result<Vec<Vec<Piece>>>>()?;
        Ok(ConnectorMicro { pixels: pixels(b, &r, dev)?, rows })
    };
    let mut batches = LoaderBatches::new(&loader, cfg.seed, cfg.batch.micro_batches, 1, &build)
        .with_skip_log(root);
    let params = ParamStore::from_varmap(model.varmap(), cfg.optimizer.decay_rule);
    let task = ConnectorTask { model: connector };
    let write_model =
        |dir: &Path| -> train::Result<()> { model.save(dir).map_err(|e| model_error(dir, e)) };
    let extras = Extras { validation: None, write_model: Some(&write_model) };
    let kind = match cfg.model.connector {
        Some(ConnectorKind::Llava) => "LLaVA",
        _ => "MiniGPT-4",
    };
    let stage = if cfg.stage == Stage::Stage1 { 1 } else { 2 };
    let title = format!("blip2 pretrain ({kind} stage {stage})");
    let steps_per_epoch = (n / cfg.batch.size).max(1) as u64;
    let settings = Settings::from_config(
        cfg,
        root.to_path_buf(),
        &title,
        steps_per_epoch,
        args.stop_after,
        args.resume.is_some(),
    );
    Ok(train::run(&settings, &params, &task, &mut batches, extras)?)
}
