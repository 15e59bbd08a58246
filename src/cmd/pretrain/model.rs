//! Building the stage-one model of a run: from an HF directory, a LAVIS `.pth` (+ ViT weights),
//! or a model config (`model.config`, or the `tiny` preset's built-in one) with a fresh seeded
//! init, optionally with the Q-Former started from BERT (`model.bert`, LAVIS `init_Qformer`) and
//! the ViT from `model.vision_weights`. The ViT is frozen; everything else is a `Var`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use qformer::model::Blip2Qformer;

use crate::common::model_dir::hf_config_json;
use qformer::weights::bert::{overlay, BertCheckpoint};
use qformer::weights::{
    detect_parts, load, read_lavis_pth, read_lavis_safetensors, LoadOptions, TensorSet,
};
use qformer::Blip2Config;
use train::config::Stage;
use train::init::named_vars;
use train::{FreshModel, RunConfig};

/// The hf-tiny tokenizer (183 WordPiece tokens + `[DEC]`), the vocabulary of the `tiny` preset.
const TINY_TOKENIZER: &str = include_str!("tiny_tokenizer.json");

pub struct RunModel {
    pub model: Blip2Qformer,
    /// The trainable variables (canonical names).
    pub varmap: VarMap,
    /// The frozen ViT's tensors (canonical names), written with the trained model so that its
    /// directory opens alone.
    pub frozen: HashMap<String, Tensor>,
    /// The run's `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// The `ln_vision` eps of the checkpoint the model started from when it is not the ViT's own
    /// (LAVIS's 1e-5), kept in the trained model's config.
    pub ln_vision_eps: Option<f64>,
}

impl RunModel {
    /// The model's `config.json` (HF layout).
    pub fn config_json(&self) -> Result<serde_json::Value> {
        let mut cfg = self.model.config().clone();
        cfg.ln_vision_eps = self.ln_vision_eps.or(cfg.ln_vision_eps);
        hf_config_json(&cfg)
    }

    /// Every tensor of the model as it is now: the frozen ViT and the trained variables.
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut all = self.frozen.clone();
        for (name, var) in named_vars(&self.varmap)? {
            all.insert(name, var.as_tensor().clone());
        }
        Ok(all)
    }
}

fn tensors_of(set: &TensorSet) -> HashMap<String, Tensor> {
    set.names().filter_map(|n| set.get(n).map(|t| (n.to_string(), t.clone()))).collect()
}

pub fn build(cfg: &RunConfig, run_root: &Path, device: &Device) -> Result<RunModel> {
    let opts = LoadOptions {
        trainable: true,
        allow_known_unused: true,
        device: device.clone(),
        ..Default::default()
    };
    let m = &cfg.model;
    if let Some(src) = &m.init_from {
        if src.is_dir() {
            // HF retrieval checkpoints have no ITG head: take it from `lm_head.safetensors`
            // (LAVIS names) beside them.
            let (hf_cfg, mut set) = TensorSet::from_hf_dir(src, device)
                .with_context(|| format!("reading model.init_from {}", src.display()))?;
            // Stage two needs no ITG head (and BLIP-2 OPT/T5 directories have none).
            let stage_one = cfg.stage == Stage::Stage1;
            if stage_one && !set.names().any(|n| n.starts_with("cls.predictions.")) {
                let head = src.join("lm_head.safetensors");
                if !head.exists() {
                    bail!("model.init_from {}: no ITG head (cls.predictions.*) and no lm_head.safetensors beside it", src.display());
                }
                set = set.merge(
                    read_lavis_safetensors(&head, device)
                        .with_context(|| format!("reading {}", head.display()))?,
                )?;
            }
            let parts = detect_parts(&hf_cfg, &set);
            let loaded = load(&hf_cfg, &set, parts, &opts)
                .with_context(|| format!("loading model.init_from {}", src.display()))?;
            return Ok(RunModel {
                model: loaded.model,
                varmap: loaded.varmap.context("loader returned no VarMap")?,
                ln_vision_eps: set.ln_vision_eps(),
                frozen: tensors_of(&set.vision_encoder_only()),
                tokenizer: src.join("tokenizer.json"),
            });
        }
        // A LAVIS checkpoint: Q-Former side from the .pth, ViT from model.vision_weights (HF dir).
        let Some(vision) = &m.vision_weights else {
            bail!("model.init_from {} is a LAVIS checkpoint: set model.vision_weights to an HF BLIP-2 directory for the ViT", src.display());
        };
        let (hf_cfg, hf) = TensorSet::from_hf_dir(vision, device)
            .with_context(|| format!("reading model.vision_weights {}", vision.display()))?;
        let vit = hf.vision_encoder_only();
        let frozen = tensors_of(&vit);
        let set = read_lavis_pth(src, device)
            .with_context(|| format!("reading model.init_from {}", src.display()))?
            .merge(vit)?;
        let parts = detect_parts(&hf_cfg, &set);
        let loaded = load(&hf_cfg, &set, parts, &opts)
            .with_context(|| format!("loading model.init_from {}", src.display()))?;
        return Ok(RunModel {
            model: loaded.model,
            varmap: loaded.varmap.context("loader returned no VarMap")?,
            frozen,
            ln_vision_eps: set.ln_vision_eps(),
            tokenizer: vision.join("tokenizer.json"),
        });
    }
    let (bcfg, tokenizer) = model_config(cfg, run_root)?;
    let fresh = FreshModel::new(&bcfg, cfg.seed, device)?;
    if let Some(dir) = &m.bert {
        let bert = BertCheckpoint::from_dir(dir, device)
            .with_context(|| format!("reading model.bert {}", dir.display()))?;
        let set = bert.qformer_tensors(&bcfg).with_context(|| {
            format!("model.bert {} does not fit the model config", dir.display())
        })?;
        let r = overlay(&named_vars(&fresh.trainable)?, &set)
            .with_context(|| format!("starting the Q-Former from model.bert {}", dir.display()))?;
        println!(
            "Q-Former from BERT {}: {} tensors copied (query FFN = text FFN), {} fresh, [DEC] row added",
            bert.source.display(),
            r.copied.len(),
            r.fresh.len()
        );
    }
    if let Some(dir) = &m.vision_weights {
        load_vision(dir, &fresh, device)?;
    }
    let frozen =
        named_vars(&fresh.frozen)?.into_iter().map(|(n, v)| (n, v.as_tensor().detach())).collect();
    Ok(RunModel {
        model: fresh.model,
        varmap: fresh.trainable,
        frozen,
        tokenizer,
        ln_vision_eps: None,
    })
}

/// The model config of a run and the tokenizer that goes with it: `model.config` (tokenizer
/// beside it) or the built-in `tiny` preset (its tokenizer written into the run directory).
fn model_config(cfg: &RunConfig, run_root: &Path) -> Result<(Blip2Config, PathBuf)> {
    let m = &cfg.model;
    if let Some(path) = &m.config {
        let bcfg = Blip2Config::from_file(path)
            .with_context(|| format!("reading model.config {}", path.display()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        return Ok((bcfg, dir.join("tokenizer.json")));
    }
    if m.preset.as_deref() == Some("tiny") {
        let tok = run_root.join("tokenizer.json");
        std::fs::write(&tok, TINY_TOKENIZER)
            .with_context(|| format!("writing the tiny preset's tokenizer {}", tok.display()))?;
        return Ok((Blip2Config::preset("tiny")?, tok));
    }
    bail!(
        "the run names no model: set model.preset = \"tiny\", model.config (a config.json with tokenizer.json beside it), optionally with model.bert, or model.init_from (HF dir or LAVIS .pth)"
    )
}

/// Frozen ViT (and `ln_vision` when the directory has it) from an HF BLIP-2 directory.
fn load_vision(dir: &Path, fresh: &FreshModel, device: &Device) -> Result<()> {
    let (_, hf) = TensorSet::from_hf_dir(dir, device)
        .with_context(|| format!("reading model.vision_weights {}", dir.display()))?;
    let ln = hf.clone().filter(|n| n.starts_with("vision_model.post_layernorm."));
    let vit = overlay(&named_vars(&fresh.frozen)?, &hf.vision_encoder_only())
        .with_context(|| format!("model.vision_weights {}", dir.display()))?;
    if !vit.fresh.is_empty() {
        bail!("model.vision_weights {}: no ViT tensors {}", dir.display(), vit.fresh.join(", "));
    }
    if !ln.is_empty() {
        overlay(&named_vars(&fresh.trainable)?, &ln)
            .with_context(|| format!("model.vision_weights {} (ln_vision)", dir.display()))?;
    }
    println!(
        "ViT from {} ({} tensors); ln_vision {}",
        dir.display(),
        vit.copied.len(),
        if ln.is_empty() { "fresh" } else { "from it too" }
    );
    Ok(())
}
