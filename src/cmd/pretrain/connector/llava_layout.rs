//! LLaVA's own start (a CLIP tower, a LLaMA, a fresh projector) and its checkpoint layout
//! (`LlavaLlamaForCausalLM`: LLaMA names, `model.mm_projector.*`, the tower named by path).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use qformer::llava::original::{is_original_config, original_name};
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
    let clip = read_json_value(&vision.join("config.json"))?;
    let mut vision_config = clip.get("vision_config").cloned().unwrap_or(clip);
    vision_config["model_type"] = "clip_vision_model".into();
    let mut text_config = read_json_value(&llm.join("config.json"))?;
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
    let vars = named_vars(varmap)?.into_iter().map(|(n, v)| (n, v.as_tensor().clone()));
    let all: Vec<(String, Tensor)> = frozen.clone().into_iter().chain(vars).collect();
    let depth = all
        .iter()
        .filter(|(n, _)| n.starts_with("multi_modal_projector.") && n.ends_with(".weight"))
        .count();
    // The tower stays in its own directory, which the config names.
    let tensors: HashMap<String, Tensor> =
        all.into_iter().filter_map(|(n, t)| original_name(&n, depth).map(|o| (o, t))).collect();
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
    read_json_value(&dir.join("config.json")).is_ok_and(|v| is_original_config(&v))
}

/// A JSON file, its path in every error.
pub(super) fn read_json_value(path: &Path) -> Result<serde_json::Value> {
    Ok(datasets::formats::json::read_json(path)?)
}

/// `path` made absolute (links resolved), for a file that must find it from anywhere.
pub(super) fn absolute(path: &Path) -> Result<String> {
    let abs = std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve {}", path.display()))?;
    Ok(abs.display().to_string())
}

/// The `config.json` of an original LLaVA checkpoint (`LlavaLlamaForCausalLM`): the LLaMA's
/// own config with the multimodal keys LLaVA-1.5 writes, the tower named by its absolute path.
pub(super) fn original_config(
    llm: &Path,
    vision: &Path,
    lcfg: &LlavaConfig,
) -> Result<serde_json::Value> {
    let path = llm.join("config.json");
    let mut config = read_json_value(&path)?;
    let tower = absolute(vision)?;
    let obj =
        config.as_object_mut().with_context(|| format!("{}: not a JSON object", path.display()))?;
    for (key, value) in [
        ("architectures", serde_json::json!(["LlavaLlamaForCausalLM"])),
        ("model_type", "llava_llama".into()),
        ("mm_vision_tower", tower.into()),
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
