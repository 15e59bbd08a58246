//! LLaVA's own start (a CLIP tower, a LLaMA, a fresh projector) and its checkpoint layout
//! (`LlavaLlamaForCausalLM`: LLaMA names, `model.mm_projector.*`, the tower named by path).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use qformer::llava::original::is_original_config;
use qformer::llava::{LlavaConfig, NamingScheme};
use qformer::weights::TensorSet;
use train::init::{init_torch_linear, named_vars};

use crate::common::model_dir::write_weights_dir;

use super::model::LLAVA_SIDE_FILES;

/// An HF LLaVA model of the CLIP tower in `vision` (a `CLIPVisionModel` or `CLIPModel`
/// directory), the LLaMA of `llm` and a fresh projector as LLaVA-1.5 starts its stage 1:
/// `mlp2x_gelu` in `torch.nn.Linear`'s init, features of the second-to-last layer without the
/// class token.
pub(super) fn fresh_llava(
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
pub(super) fn save_original(
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
pub(super) fn is_original_dir(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| is_original_config(&v))
}

/// The name of a canonical tensor in an original LLaVA checkpoint (`model.*`, `lm_head.*`,
/// `model.mm_projector.{0,2}.*`); `None` for the tower, which LLaVA keeps in its own directory.
pub(super) fn canonical_to_original(name: &str) -> Option<String> {
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
pub(super) fn original_config(
    llm: &Path,
    vision: &Path,
    lcfg: &LlavaConfig,
) -> Result<serde_json::Value> {
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
