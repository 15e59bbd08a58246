//! Building the stage-one model of a run: from an HF directory, a LAVIS `.pth` (+ ViT weights),
//! or a model config with a fresh seeded init. The ViT is frozen; everything else is a `Var`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use qformer::model::{Blip2Qformer, ModelParts};
use qformer::train::config::Stage;
use qformer::train::{rng, RunConfig};
use qformer::weights::{
    detect_parts, load, read_lavis_pth, read_lavis_safetensors, LoadOptions, TensorSet,
};
use qformer::Blip2Config;

use super::init::init_fresh;

pub struct RunModel {
    pub model: Blip2Qformer,
    /// The trainable variables (canonical names).
    pub varmap: VarMap,
    /// Where the model config lives: the tokenizer is looked up beside it.
    pub dir: PathBuf,
}

pub fn build(cfg: &RunConfig, device: &Device) -> Result<RunModel> {
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
                dir: src.clone(),
            });
        }
        // A LAVIS checkpoint: Q-Former side from the .pth, ViT from model.vision_weights (HF dir).
        let Some(vision) = &m.vision_weights else {
            bail!("model.init_from {} is a LAVIS checkpoint: set model.vision_weights to an HF BLIP-2 directory for the ViT", src.display());
        };
        let (hf_cfg, hf) = TensorSet::from_hf_dir(vision, device)
            .with_context(|| format!("reading model.vision_weights {}", vision.display()))?;
        let set = read_lavis_pth(src, device)
            .with_context(|| format!("reading model.init_from {}", src.display()))?
            .merge(hf.vision_encoder_only())?;
        let parts = detect_parts(&hf_cfg, &set);
        let loaded = load(&hf_cfg, &set, parts, &opts)
            .with_context(|| format!("loading model.init_from {}", src.display()))?;
        return Ok(RunModel {
            model: loaded.model,
            varmap: loaded.varmap.context("loader returned no VarMap")?,
            dir: vision.clone(),
        });
    }
    let Some(config_path) = &m.config else {
        bail!(
            "model.preset `{}` has no built-in weights: set model.init_from (HF dir or LAVIS .pth) or model.config (a config.json with tokenizer.json beside it) for a fresh init",
            m.preset
        );
    };
    fresh(config_path, cfg.seed, device)
}

/// Fresh model from `config.json`, initialized from the run seed (`init` sub-stream).
fn fresh(config_path: &Path, seed: u64, device: &Device) -> Result<RunModel> {
    let bcfg = Blip2Config::from_file(config_path)
        .with_context(|| format!("reading model.config {}", config_path.display()))?;
    let parts = ModelParts::from_config(&bcfg, true);
    // The ViT gets its own VarMap so it is initialized too but never handed to the optimizer.
    let frozen = VarMap::new();
    let varmap = VarMap::new();
    let model = Blip2Qformer::new(
        &bcfg,
        parts,
        bcfg.vision_config.layer_norm_eps,
        VarBuilder::from_varmap(&frozen, DType::F32, device),
        VarBuilder::from_varmap(&varmap, DType::F32, device),
    )?;
    let mut r = rng::substream(seed, "init");
    init_fresh(&named(&frozen), &mut r)?;
    init_fresh(&named(&varmap), &mut r)?;
    let dir = config_path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(RunModel { model, varmap, dir })
}

fn named(vm: &VarMap) -> Vec<(String, candle_core::Var)> {
    let data = vm.data().lock().expect("VarMap lock");
    data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
