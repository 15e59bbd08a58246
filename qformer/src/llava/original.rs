//! Original haotian-liu LLaVA checkpoints (`LlavaLlamaForCausalLM`), mapped onto [`LlavaConfig`]
//! and the canonical tensor names so the model, the connector and generation are shared with
//! HF's LLaVA.
//!
//! Reference: LLaVA's `llava/model/llava_arch.py`, `multimodal_encoder/clip_encoder.py`,
//! `multimodal_projector/builder.py`, `model/builder.py` and `mm_utils.py`.
//!
//! - `config.json` is a LLaMA config (the LLM's keys at top level) plus `mm_vision_tower`,
//!   `mm_projector_type` (`linear` when absent, `mlpNx_gelu`), `mm_hidden_size`,
//!   `mm_vision_select_layer` (an index into the tower's hidden states),
//!   `mm_vision_select_feature` (`patch` drops the class token, `cls_patch` keeps it),
//!   `image_aspect_ratio` (`pad` or square) and `mm_use_im_start_end`.
//! - The checkpoint has no tower: `mm_vision_tower` names a CLIP directory (`CLIPVisionModel`, or
//!   a `CLIPModel` whose `vision_config` and `vision_model.*` are taken), found as a path
//!   (absolute, or relative to the model directory) or in the HF hub cache. Its
//!   `preprocessor_config.json` is the image processor, as LLaVA loads it.
//! - Tensors: `model.{embed_tokens,layers,norm}.*`, `lm_head.*`, and the projector
//!   `model.mm_projector.{0,2,…}.*` (`nn.Sequential` indices; `linear`: `model.mm_projector.*`).
//!   A `mm_projector.bin` beside them (stage-1 pretraining output) is loaded over them, as LLaVA's
//!   builder loads it over the base model's weights.
//! - Image tokens are spliced where `<image>` stands in the prompt (`tokenizer_image_token`), so
//!   [`LlavaConfig::image_token_index`] is unused; it is set past the vocabulary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Deserialize;

use super::{
    check_tensors, ClipVisionConfig, FeatureSelectStrategy, LlavaConfig, NamingScheme,
    VisionFeatureLayer,
};
use crate::llm::LlamaConfig;
use crate::weights::TensorSet;
use crate::Error;

/// `image_aspect_ratio`: how an image is made square before the CLIP processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageAspect {
    /// The processor as it is (resize the shortest edge, center crop).
    Square,
    /// `expand2square`: pad to a square with the mean colour first.
    Pad,
}

/// What an original LLaVA `config.json` says beyond [`LlavaConfig`].
#[derive(Debug, Clone)]
pub struct OriginalLlavaConfig {
    pub llava: LlavaConfig,
    /// `mm_vision_tower` as written.
    pub vision_tower: String,
    pub image_aspect_ratio: ImageAspect,
    /// Prompts wrap the image in `<im_start>` … `<im_end>`.
    pub mm_use_im_start_end: bool,
}

fn d_linear() -> String {
    "linear".into()
}
fn d_patch() -> String {
    "patch".into()
}

#[derive(Debug, Deserialize)]
struct RawOriginal {
    architectures: Option<Vec<String>>,
    mm_vision_tower: Option<String>,
    vision_tower: Option<String>,
    #[serde(default = "d_linear")]
    mm_projector_type: String,
    mm_vision_select_layer: Option<i64>,
    #[serde(default = "d_patch")]
    mm_vision_select_feature: String,
    mm_hidden_size: Option<usize>,
    image_aspect_ratio: Option<String>,
    #[serde(default)]
    mm_use_im_start_end: bool,
    mm_patch_merge_type: Option<String>,
}

/// Whether a `config.json` is an original LLaVA one (it names a vision tower or a projector type
/// at top level and has no HF `vision_config`).
pub fn is_original_config(v: &serde_json::Value) -> bool {
    let arch = v.get("architectures").and_then(|a| a.as_array()).is_some_and(|a| {
        a.iter().any(|x| {
            x.as_str().is_some_and(|s| s.starts_with("Llava") && s.ends_with("ForCausalLM"))
        })
    });
    v.get("vision_config").is_none()
        && (arch || v.get("mm_vision_tower").is_some() || v.get("mm_projector_type").is_some())
}

/// Linear layers of an `mm_projector_type`: `linear` 1, `mlpNx_gelu` N.
pub fn projector_depth(projector_type: &str) -> crate::Result<usize> {
    if projector_type == "linear" {
        return Ok(1);
    }
    let n = projector_type
        .strip_prefix("mlp")
        .and_then(|r| r.strip_suffix("x_gelu"))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n >= 1);
    n.ok_or_else(|| {
        Error::Config(format!(
            "mm_projector_type {projector_type:?} is not supported (linear or mlpNx_gelu)"
        ))
    })
}

/// The tower's vision config from its `config.json` (`CLIPVisionModel`, or `CLIPModel`'s
/// `vision_config`).
pub fn tower_vision_config(tower_config: &serde_json::Value) -> crate::Result<ClipVisionConfig> {
    let v = tower_config.get("vision_config").unwrap_or(tower_config);
    if let Some(t) = v.get("model_type").and_then(|t| t.as_str()) {
        if t != "clip_vision_model" && t != "clip" {
            return Err(Error::Config(format!(
                "vision tower model_type {t:?} is not supported (only CLIP)"
            )));
        }
    }
    serde_json::from_value(v.clone())
        .map_err(|e| Error::Config(format!("vision tower config: {e}")))
}

impl OriginalLlavaConfig {
    /// The model's `config.json` and its tower's `config.json`.
    pub fn from_json(
        value: serde_json::Value,
        tower_config: &serde_json::Value,
    ) -> crate::Result<Self> {
        let cfg_err = |m: String| Error::Config(m);
        let raw: RawOriginal = serde_json::from_value(value.clone())
            .map_err(|e| cfg_err(format!("original LLaVA config: {e}")))?;
        if let Some(arch) = raw.architectures.as_ref().and_then(|a| a.first()) {
            if arch != "LlavaLlamaForCausalLM" {
                return Err(cfg_err(format!(
                    "architectures {arch:?} is not supported (only LlavaLlamaForCausalLM)"
                )));
            }
        }
        let vision_tower = raw.mm_vision_tower.or(raw.vision_tower).ok_or_else(|| {
            cfg_err(
                "mm_vision_tower is missing (the CLIP tower the checkpoint was trained with)"
                    .into(),
            )
        })?;
        let image_aspect_ratio = match raw.image_aspect_ratio.as_deref() {
            None | Some("square") => ImageAspect::Square,
            Some("pad") => ImageAspect::Pad,
            Some(other) => {
                return Err(cfg_err(format!(
                    "image_aspect_ratio {other:?} is not supported (pad or square; anyres is LLaVA-NeXT)"
                )))
            }
        };
        if let Some(m) = raw.mm_patch_merge_type.as_deref() {
            if m != "flat" {
                return Err(cfg_err(format!("mm_patch_merge_type {m:?} is not supported (flat)")));
            }
        }
        let strategy = match raw.mm_vision_select_feature.as_str() {
            "patch" => FeatureSelectStrategy::Default,
            "cls_patch" => FeatureSelectStrategy::Full,
            other => {
                return Err(cfg_err(format!(
                    "mm_vision_select_feature {other:?} is not supported (patch or cls_patch)"
                )))
            }
        };
        let layer = raw
            .mm_vision_select_layer
            .ok_or_else(|| cfg_err("mm_vision_select_layer is missing".into()))?;
        let projector_depth = projector_depth(&raw.mm_projector_type)?;
        let text_config: LlamaConfig = serde_json::from_value(value)
            .map_err(|e| cfg_err(format!("LLaMA keys of the config: {e}")))?;
        let vision_config = tower_vision_config(tower_config)?;
        if let Some(mm) = raw.mm_hidden_size {
            if mm != vision_config.hidden_size {
                return Err(cfg_err(format!(
                    "mm_hidden_size {mm} differs from the vision tower's hidden_size {}",
                    vision_config.hidden_size
                )));
            }
        }
        let llava = LlavaConfig {
            vision_config,
            image_token_index: text_config.vocab_size as u32,
            text_config,
            projector_hidden_act: "gelu".into(),
            vision_feature_layer: VisionFeatureLayer::One(layer),
            vision_feature_select_strategy: strategy,
            multimodal_projector_bias: true,
            image_seq_length: None,
            projector_depth,
        };
        llava.validate()?;
        Ok(Self {
            llava,
            vision_tower,
            image_aspect_ratio,
            mm_use_im_start_end: raw.mm_use_im_start_end,
        })
    }
}

/// The HF hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn default_hub_cache() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")))
}

/// The snapshot of `models--ORG--NAME` in `cache`: the one `refs/main` names, else the first
/// (by name) holding a `config.json`.
fn hub_snapshot(cache: &Path, repo: &str) -> Option<PathBuf> {
    let root = cache.join(format!("models--{}", repo.replace('/', "--")));
    let snapshots = root.join("snapshots");
    if let Ok(commit) = std::fs::read_to_string(root.join("refs/main")) {
        let dir = snapshots.join(commit.trim());
        if dir.join("config.json").is_file() {
            return Some(dir);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").is_file())
        .collect();
    dirs.sort();
    dirs.into_iter().next()
}

/// The directory of `mm_vision_tower`: a path (absolute, or relative to `model_dir`), else
/// `models--ORG--NAME/snapshots/*/` in `hub_cache`. The error names every place looked at.
pub fn resolve_vision_tower(
    name: &str,
    model_dir: &Path,
    hub_cache: Option<&Path>,
) -> crate::Result<PathBuf> {
    let as_path = Path::new(name);
    let direct = if as_path.is_absolute() { as_path.to_path_buf() } else { model_dir.join(name) };
    if direct.join("config.json").is_file() {
        return Ok(direct);
    }
    let mut looked = vec![format!("{}/config.json", direct.display())];
    if let Some(cache) = hub_cache {
        if !as_path.is_absolute() {
            if let Some(dir) = hub_snapshot(cache, name) {
                return Ok(dir);
            }
            looked.push(format!(
                "{}/models--{}/snapshots/*/config.json",
                cache.display(),
                name.replace('/', "--")
            ));
        }
    }
    Err(Error::Msg(format!(
        "vision tower {name:?} (mm_vision_tower in {}/config.json) not found: looked for {}",
        model_dir.display(),
        looked.join(" and ")
    )))
}

/// The name a canonical tensor has in an original checkpoint whose projector has
/// `projector_depth` layers (`linear`, depth 1, is one `nn.Linear`: `model.mm_projector.{weight,
/// bias}`; deeper ones are an `nn.Sequential` with the linears at the even indices); `None` for
/// the tower, which such a checkpoint does not hold, and for names outside the layout.
pub fn original_name(canonical: &str, projector_depth: usize) -> Option<String> {
    if let Some(r) = canonical.strip_prefix("language_model.model.") {
        return Some(format!("model.{r}"));
    }
    if let Some(r) = canonical.strip_prefix("language_model.lm_head.") {
        return Some(format!("lm_head.{r}"));
    }
    let (k, p) = canonical.strip_prefix("multi_modal_projector.linear_")?.split_once('.')?;
    let k = k.parse::<usize>().ok().filter(|&k| k >= 1)?;
    Some(match projector_depth {
        1 => format!("model.mm_projector.{p}"),
        _ => format!("model.mm_projector.{}.{p}", 2 * (k - 1)),
    })
}

/// The original name of a canonical tensor (for messages).
pub fn canonical_to_original(canonical: &str) -> String {
    if let Some(r) = canonical.strip_prefix("vision_tower.vision_model.") {
        return format!("vision_model.{r} (vision tower)");
    }
    original_name(canonical, 2).unwrap_or_else(|| canonical.to_string())
}

/// The canonical name of an original checkpoint tensor; `None` for names outside the layout.
/// `linear` projectors (`depth` 1) are `model.mm_projector.{weight,bias}`.
pub fn original_to_canonical(name: &str) -> Option<String> {
    if let Some(r) = name.strip_prefix("model.mm_projector.") {
        if matches!(r, "weight" | "bias") {
            return Some(format!("multi_modal_projector.linear_1.{r}"));
        }
        let (i, p) = r.split_once('.')?;
        let i: usize = i.parse().ok()?;
        // `nn.Sequential(Linear, GELU, Linear, …)`: the linears sit at the even indices.
        if !i.is_multiple_of(2) {
            return None;
        }
        return Some(format!("multi_modal_projector.linear_{}.{p}", i / 2 + 1));
    }
    // Checkpoints saved with their tower (`CLIPVisionTower.vision_tower` is a CLIPVisionModel).
    if let Some(r) = name.strip_prefix("model.vision_tower.vision_tower.vision_model.") {
        return Some(format!("vision_tower.vision_model.{r}"));
    }
    for part in ["embed_tokens.", "layers.", "norm.", "rotary_emb."] {
        if let Some(r) = name.strip_prefix("model.").filter(|r| r.starts_with(part)) {
            return Some(format!("language_model.model.{r}"));
        }
    }
    name.strip_prefix("lm_head.").map(|r| format!("language_model.lm_head.{r}"))
}

/// A directory's weights as they lie: `model.safetensors` (or its sharded index), else
/// `pytorch_model.bin` (or `pytorch_model.bin.index.json` and its shards), torch pickles.
pub fn read_dir_weights(dir: &Path, device: &Device) -> crate::Result<Vec<(String, Tensor)>> {
    let set = if dir.join("model.safetensors").is_file()
        || dir.join("model.safetensors.index.json").is_file()
    {
        TensorSet::from_hf_weights(dir, device)?
    } else if dir.join("pytorch_model.bin").is_file() {
        read_pickle(&dir.join("pytorch_model.bin"), device)?
    } else if dir.join("pytorch_model.bin.index.json").is_file() {
        TensorSet::from_shard_index(&dir.join("pytorch_model.bin.index.json"), |shard| {
            read_pickle(shard, device)
        })?
    } else {
        return Err(Error::Msg(format!(
            "{}: no weights (model.safetensors, model.safetensors.index.json, pytorch_model.bin \
             or pytorch_model.bin.index.json)",
            dir.display()
        )));
    };
    Ok(set.into_map().into_iter().collect())
}

/// A `torch.save`d state dict.
fn read_pickle(path: &Path, device: &Device) -> crate::Result<TensorSet> {
    let tensors = candle_core::pickle::read_all_with_key(path, None).map_err(|e| {
        Error::Msg(format!("{}: cannot read torch checkpoint: {e}", path.display()))
    })?;
    let source = path.display().to_string();
    let mut set = TensorSet::empty();
    for (name, t) in tensors {
        set.insert(name, t.to_device(device)?, &source);
    }
    Ok(set)
}

/// Renames original tensors to canonical names; names outside the layout are an error naming
/// them (and the file).
fn rename_original(
    tensors: Vec<(String, Tensor)>,
    source: &Path,
    out: &mut HashMap<String, Tensor>,
) -> crate::Result<()> {
    let mut unknown = Vec::new();
    for (name, t) in tensors {
        match original_to_canonical(&name) {
            Some(c) => {
                out.insert(c, t);
            }
            None => unknown.push(name),
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort();
    Err(Error::Checkpoint {
        source_name: source.display().to_string(),
        report: format!(
            "{} tensors are not original LLaVA names (model.*, lm_head.*, model.mm_projector.*), e.g. {:?}",
            unknown.len(),
            &unknown[..unknown.len().min(5)]
        ),
    })
}

/// `CLIPModel` parts LLaVA never reads.
fn clip_text_side(name: &str) -> bool {
    name.starts_with("text_model.")
        || name.starts_with("visual_projection.")
        || name.starts_with("text_projection.")
        || name == "logit_scale"
}

/// An original LLaVA directory, loaded.
#[derive(Debug)]
pub struct OriginalLlavaDir {
    pub config: OriginalLlavaConfig,
    /// The resolved `mm_vision_tower` directory.
    pub tower_dir: PathBuf,
    /// The image processor LLaVA uses: the tower's `preprocessor_config.json` (else the model
    /// directory's).
    pub preprocessor_config: PathBuf,
    /// Canonical names, checked against the config.
    pub tensors: HashMap<String, Tensor>,
}

/// `config.json` of `dir`, read as JSON.
fn read_json(path: &Path) -> crate::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::json(path, e))
}

/// The config of an original LLaVA directory with its tower resolved (no weights read).
pub fn read_original_config(
    dir: &Path,
    hub_cache: Option<&Path>,
) -> crate::Result<(OriginalLlavaConfig, PathBuf)> {
    let cfg_path = dir.join("config.json");
    let value = read_json(&cfg_path)?;
    let tower_name = value
        .get("mm_vision_tower")
        .or_else(|| value.get("vision_tower"))
        .and_then(|v| v.as_str())
        .ok_or_else(|| {
            Error::Config(format!("{}: mm_vision_tower is missing", cfg_path.display()))
        })?
        .to_string();
    let tower_dir = resolve_vision_tower(&tower_name, dir, hub_cache)?;
    let tower_cfg_path = tower_dir.join("config.json");
    let tower_cfg = read_json(&tower_cfg_path)?;
    let config = OriginalLlavaConfig::from_json(value, &tower_cfg).map_err(|e| match e {
        Error::Config(m) => Error::Config(format!(
            "{} (vision tower {}): {m}",
            cfg_path.display(),
            tower_cfg_path.display()
        )),
        e => e,
    })?;
    Ok((config, tower_dir))
}

/// The image processor LLaVA uses: the tower's `preprocessor_config.json` (as LLaVA's
/// `CLIPImageProcessor.from_pretrained(vision_tower)`), else the model directory's.
pub fn preprocessor_config_path(tower_dir: &Path, model_dir: &Path) -> crate::Result<PathBuf> {
    [tower_dir, model_dir]
        .iter()
        .map(|d| d.join("preprocessor_config.json"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Msg(format!(
                "no preprocessor_config.json in the vision tower {} nor in {}",
                tower_dir.display(),
                model_dir.display()
            ))
        })
}

/// An original LLaVA directory: config, tower, weights (`mm_projector.bin` over the
/// checkpoint's), all under canonical names and checked.
pub fn load_original_dir(
    dir: &Path,
    hub_cache: Option<&Path>,
    device: &Device,
) -> crate::Result<OriginalLlavaDir> {
    let (config, tower_dir) = read_original_config(dir, hub_cache)?;
    let mut tensors = HashMap::new();
    rename_original(read_dir_weights(dir, device)?, dir, &mut tensors)?;
    let adapter = dir.join("mm_projector.bin");
    if adapter.is_file() {
        let adapter_tensors = read_pickle(&adapter, device)?.into_map().into_iter().collect();
        rename_original(adapter_tensors, &adapter, &mut tensors)?;
    }
    let has_tower = tensors.keys().any(|k| k.starts_with("vision_tower."));
    if !has_tower {
        for (name, t) in read_dir_weights(&tower_dir, device)? {
            if clip_text_side(&name) {
                continue;
            }
            // Names outside `vision_model.*` are kept as they are: the check reports them.
            let canonical = match name.strip_prefix("vision_model.") {
                Some(r) => format!("vision_tower.vision_model.{r}"),
                None => name,
            };
            tensors.insert(canonical, t);
        }
    }
    check_tensors(&config.llava, NamingScheme::Original, &tensors)?;
    let preprocessor_config = preprocessor_config_path(&tower_dir, dir)?;
    Ok(OriginalLlavaDir { config, tower_dir, preprocessor_config, tensors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projector_types_map_to_depths() {
        assert_eq!(projector_depth("linear").unwrap(), 1);
        assert_eq!(projector_depth("mlp2x_gelu").unwrap(), 2);
        assert_eq!(projector_depth("mlp3x_gelu").unwrap(), 3);
        for bad in ["identity", "mlp0x_gelu", "mlpx_gelu", "mlp2x_relu"] {
            let e = projector_depth(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn original_names_map_to_canonical_and_back() {
        let cases = [
            ("model.embed_tokens.weight", "language_model.model.embed_tokens.weight"),
            (
                "model.layers.3.self_attn.q_proj.weight",
                "language_model.model.layers.3.self_attn.q_proj.weight",
            ),
            ("model.norm.weight", "language_model.model.norm.weight"),
            ("lm_head.weight", "language_model.lm_head.weight"),
            ("model.mm_projector.0.weight", "multi_modal_projector.linear_1.weight"),
            ("model.mm_projector.2.bias", "multi_modal_projector.linear_2.bias"),
            ("model.mm_projector.4.bias", "multi_modal_projector.linear_3.bias"),
        ];
        for (orig, can) in cases {
            assert_eq!(original_to_canonical(orig).as_deref(), Some(can), "{orig}");
            assert_eq!(canonical_to_original(can), orig);
        }
        assert_eq!(
            original_to_canonical("model.mm_projector.weight").as_deref(),
            Some("multi_modal_projector.linear_1.weight")
        );
        assert_eq!(
            original_name("multi_modal_projector.linear_1.bias", 1).as_deref(),
            Some("model.mm_projector.bias")
        );
        assert_eq!(original_name("vision_tower.vision_model.pre_layrnorm.bias", 2), None);
        assert_eq!(
            original_to_canonical("model.vision_tower.vision_tower.vision_model.pre_layrnorm.bias")
                .as_deref(),
            Some("vision_tower.vision_model.pre_layrnorm.bias")
        );
        for bad in ["model.mm_projector.1.weight", "model.foo", "vision_model.x", "extra"] {
            assert_eq!(original_to_canonical(bad), None, "{bad}");
        }
    }

    #[test]
    fn clip_model_configs_give_their_vision_config() {
        let full: serde_json::Value = serde_json::json!({
            "model_type": "clip",
            "text_config": {"hidden_size": 8},
            "vision_config": {"hidden_size": 16, "image_size": 28, "patch_size": 14}
        });
        let v = tower_vision_config(&full).unwrap();
        assert_eq!((v.hidden_size, v.image_size, v.patch_size), (16, 28, 14));
        let bad = serde_json::json!({"model_type": "siglip_vision_model"});
        assert!(tower_vision_config(&bad).unwrap_err().to_string().contains("siglip"));
    }

    #[test]
    fn a_missing_tower_error_names_every_place_looked_at() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("hub");
        let e = resolve_vision_tower("openai/clip-x", tmp.path(), Some(&cache)).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("openai/clip-x") && m.contains("models--openai--clip-x/snapshots"),
            "{m}"
        );
        // A snapshot with a config.json is found.
        let snap = cache.join("models--openai--clip-x/snapshots/abc");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        assert_eq!(resolve_vision_tower("openai/clip-x", tmp.path(), Some(&cache)).unwrap(), snap);
    }
}
