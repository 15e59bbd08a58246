//! LLaVA (HF `LlavaForConditionalGeneration`): a CLIP vision tower, the two-layer
//! `multi_modal_projector`, and a LLaMA LM whose `<image>` token embeddings are replaced by the
//! projected image features.
//!
//! Reference: transformers 4.57 `models/llava/modeling_llava.py` (`get_image_features`,
//! `get_placeholder_mask`, `forward`). Features are `hidden_states[vision_feature_layer]` (an
//! index, negative from the end, or a list whose states are concatenated on the feature axis);
//! strategy `default` drops the class token, `full` keeps it. The image-token positions of
//! `input_ids` take the projector rows in order (row-major over the batch, images in order), as
//! `masked_scatter` does.
//!
//! Checkpoints come under two naming schemes, mapped by [`canonical_tensors`] to one canonical set
//! (the older Hub names, which 4.57's `save_pretrained` still writes):
//!
//! | current (`model.state_dict()`, transformers ≥ 4.52) | canonical (older Hub names) |
//! |---|---|
//! | `model.vision_tower.*` | `vision_tower.*` |
//! | `model.multi_modal_projector.*` | `multi_modal_projector.*` |
//! | `model.language_model.*` | `language_model.model.*` |
//! | `lm_head.*` | `language_model.lm_head.*` |
//!
//! Original haotian-liu LLaVA directories (`LlavaLlamaForCausalLM`, the CLIP tower in its own
//! directory) map onto the same config and names in [`original`].

pub mod clip;
pub mod original;
pub mod projector;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::Deserialize;

pub use clip::{ClipVisionConfig, ClipVisionModel};
pub use projector::{Activation, MultiModalProjector};

use crate::llm::{LlamaConfig, LlamaForCausalLm};
use crate::weights::TensorSet;
use crate::Error;

/// HF `vision_feature_layer`: one hidden-state index or a list of them (negative from the end).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum VisionFeatureLayer {
    One(i64),
    Many(Vec<i64>),
}

impl VisionFeatureLayer {
    pub fn layers(&self) -> Vec<i64> {
        match self {
            Self::One(l) => vec![*l],
            Self::Many(v) => v.clone(),
        }
    }

    /// The indices into HF's `hidden_states` tuple of `n` entries (Python indexing).
    pub fn resolve(&self, n: usize) -> crate::Result<Vec<usize>> {
        let layers = self.layers();
        if layers.is_empty() {
            return Err(Error::Config("vision_feature_layer is an empty list".into()));
        }
        layers
            .iter()
            .map(|&l| {
                let i = if l < 0 { n as i64 + l } else { l };
                if i < 0 || i >= n as i64 {
                    Err(Error::Config(format!(
                        "vision_feature_layer {l} is out of range: the vision tower has {n} hidden \
                         states (embeddings + {} layers)",
                        n - 1
                    )))
                } else {
                    Ok(i as usize)
                }
            })
            .collect()
    }
}

/// HF `vision_feature_select_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureSelectStrategy {
    /// Drop the class token (`[:, 1:]`).
    Default,
    /// Keep every token.
    Full,
}

fn d_image_token() -> u32 {
    32000
}
fn d_gelu() -> String {
    "gelu".into()
}
fn d_layer() -> VisionFeatureLayer {
    VisionFeatureLayer::One(-2)
}
fn d_strategy() -> FeatureSelectStrategy {
    FeatureSelectStrategy::Default
}
fn d_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct RawLlavaConfig {
    model_type: Option<String>,
    vision_config: Option<serde_json::Value>,
    text_config: Option<serde_json::Value>,
    #[serde(default = "d_image_token")]
    image_token_index: u32,
    #[serde(default = "d_gelu")]
    projector_hidden_act: String,
    #[serde(default = "d_layer")]
    vision_feature_layer: VisionFeatureLayer,
    #[serde(default = "d_strategy")]
    vision_feature_select_strategy: FeatureSelectStrategy,
    #[serde(default = "d_true")]
    multimodal_projector_bias: bool,
    image_seq_length: Option<usize>,
    tie_word_embeddings: Option<bool>,
}

/// HF `LlavaConfig` with a CLIP vision tower and a LLaMA text model.
#[derive(Debug, Clone)]
pub struct LlavaConfig {
    pub vision_config: ClipVisionConfig,
    pub text_config: LlamaConfig,
    pub image_token_index: u32,
    pub projector_hidden_act: String,
    pub vision_feature_layer: VisionFeatureLayer,
    pub vision_feature_select_strategy: FeatureSelectStrategy,
    pub multimodal_projector_bias: bool,
    pub image_seq_length: Option<usize>,
    /// Linear layers of the projector: 2 in HF's LLaVA; original LLaVA's `linear` has 1,
    /// `mlpNx_gelu` N.
    pub projector_depth: usize,
}

impl LlavaConfig {
    /// Parse and validate an HF LLaVA `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> crate::Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::json(path, e))?;
        Self::from_json(value).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    pub fn from_json(value: serde_json::Value) -> crate::Result<Self> {
        let cfg_err = |m: String| Error::Config(m);
        let raw: RawLlavaConfig =
            serde_json::from_value(value).map_err(|e| cfg_err(format!("LLaVA config: {e}")))?;
        if let Some(t) = raw.model_type.as_deref() {
            if t != "llava" {
                return Err(cfg_err(format!("model_type {t:?} is not \"llava\"")));
            }
        }
        let sub = |v: Option<serde_json::Value>, name: &str, model_type: &str| {
            let v = v.ok_or_else(|| cfg_err(format!("{name} is missing")))?;
            match v.get("model_type").and_then(|t| t.as_str()) {
                Some(t) if t != model_type => Err(cfg_err(format!(
                    "{name}.model_type {t:?} is not supported (only {model_type:?})"
                ))),
                _ => Ok(v),
            }
        };
        let vision = sub(raw.vision_config, "vision_config", "clip_vision_model")?;
        let mut text = sub(raw.text_config, "text_config", "llama")?;
        // The top-level flag when the text config leaves it out (HF writes only non-defaults).
        if let (Some(tie), Some(obj)) = (raw.tie_word_embeddings, text.as_object_mut()) {
            obj.entry("tie_word_embeddings").or_insert(serde_json::Value::Bool(tie));
        }
        let vision_config: ClipVisionConfig =
            serde_json::from_value(vision).map_err(|e| cfg_err(format!("vision_config: {e}")))?;
        let text_config: LlamaConfig =
            serde_json::from_value(text).map_err(|e| cfg_err(format!("text_config: {e}")))?;
        let cfg = Self {
            vision_config,
            text_config,
            image_token_index: raw.image_token_index,
            projector_hidden_act: raw.projector_hidden_act,
            vision_feature_layer: raw.vision_feature_layer,
            vision_feature_select_strategy: raw.vision_feature_select_strategy,
            multimodal_projector_bias: raw.multimodal_projector_bias,
            image_seq_length: raw.image_seq_length,
            projector_depth: 2,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> crate::Result<()> {
        self.vision_config.validate()?;
        self.text_config.validate()?;
        Activation::from_hf(&self.projector_hidden_act)?;
        self.feature_layers()?;
        if self.projector_depth == 0 {
            return Err(Error::Config("the projector needs at least one layer".into()));
        }
        Ok(())
    }

    /// `vision_feature_layer` as indices into the tower's hidden states.
    pub fn feature_layers(&self) -> crate::Result<Vec<usize>> {
        self.vision_feature_layer.resolve(self.vision_config.num_hidden_layers + 1)
    }

    /// Projector input width: vision width × number of selected layers.
    pub fn projector_in_dim(&self) -> usize {
        self.vision_config.hidden_size * self.vision_feature_layer.layers().len()
    }

    /// Image tokens per image after feature selection.
    pub fn tokens_per_image(&self) -> usize {
        match self.vision_feature_select_strategy {
            FeatureSelectStrategy::Default => self.vision_config.num_patches(),
            FeatureSelectStrategy::Full => self.vision_config.num_positions(),
        }
    }

    /// Every tensor the model reads, under canonical names.
    pub fn expected_tensors(&self) -> Vec<String> {
        let mut out = Vec::new();
        let v = "vision_tower.vision_model";
        out.push(format!("{v}.embeddings.class_embedding"));
        out.push(format!("{v}.embeddings.patch_embedding.weight"));
        out.push(format!("{v}.embeddings.position_embedding.weight"));
        for p in ["weight", "bias"] {
            out.push(format!("{v}.pre_layrnorm.{p}"));
        }
        for i in 0..self.vision_config.num_hidden_layers {
            let l = format!("{v}.encoder.layers.{i}");
            for m in [
                "layer_norm1",
                "layer_norm2",
                "mlp.fc1",
                "mlp.fc2",
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.out_proj",
            ] {
                for p in ["weight", "bias"] {
                    out.push(format!("{l}.{m}.{p}"));
                }
            }
        }
        for k in 1..=self.projector_depth {
            out.push(format!("multi_modal_projector.linear_{k}.weight"));
            if self.multimodal_projector_bias {
                out.push(format!("multi_modal_projector.linear_{k}.bias"));
            }
        }
        let t = &self.text_config;
        let lm = "language_model.model";
        out.push(format!("{lm}.embed_tokens.weight"));
        out.push(format!("{lm}.norm.weight"));
        for i in 0..t.num_hidden_layers {
            let l = format!("{lm}.layers.{i}");
            out.push(format!("{l}.input_layernorm.weight"));
            out.push(format!("{l}.post_attention_layernorm.weight"));
            for p in ["q_proj", "k_proj", "v_proj", "o_proj"] {
                out.push(format!("{l}.self_attn.{p}.weight"));
                if t.attention_bias {
                    out.push(format!("{l}.self_attn.{p}.bias"));
                }
            }
            for p in ["gate_proj", "up_proj", "down_proj"] {
                out.push(format!("{l}.mlp.{p}.weight"));
                if t.mlp_bias {
                    out.push(format!("{l}.mlp.{p}.bias"));
                }
            }
        }
        if !t.tie_word_embeddings {
            out.push("language_model.lm_head.weight".into());
        }
        out
    }
}

/// The tensor-naming scheme of a LLaVA checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamingScheme {
    /// `model.vision_tower.*`, `model.multi_modal_projector.*`, `model.language_model.*`,
    /// `lm_head.*` (`model.state_dict()` of transformers ≥ 4.52).
    Current,
    /// `vision_tower.*`, `multi_modal_projector.*`, `language_model.model.*`,
    /// `language_model.lm_head.*` (llava-hf on the Hub; the canonical names here).
    Legacy,
    /// Original LLaVA (`LlavaLlamaForCausalLM`): `model.*`, `lm_head.*`, `model.mm_projector.*`,
    /// and the CLIP tower's own `vision_model.*` from its directory ([`original`]).
    Original,
}

const CURRENT_TO_CANONICAL: [(&str, &str); 4] = [
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
];
const LEGACY_PREFIXES: [&str; 4] =
    ["vision_tower.", "multi_modal_projector.", "language_model.model.", "language_model.lm_head."];

impl NamingScheme {
    /// The name a canonical tensor has under this scheme.
    pub fn source_name(self, canonical: &str) -> String {
        match self {
            Self::Legacy => canonical.to_string(),
            Self::Original => original::canonical_to_original(canonical),
            Self::Current => CURRENT_TO_CANONICAL
                .iter()
                .find_map(|(cur, can)| {
                    canonical.strip_prefix(can).map(|rest| format!("{cur}{rest}"))
                })
                .unwrap_or_else(|| canonical.to_string()),
        }
    }
}

/// Buffers and unused weights a checkpoint may carry besides [`LlavaConfig::expected_tensors`].
fn known_unused(canonical: &str) -> bool {
    canonical.starts_with("vision_tower.vision_model.post_layernorm.")
        || canonical.ends_with("embeddings.position_ids")
        || canonical.ends_with("rotary_emb.inv_freq")
}

/// Detect the naming scheme and rename every tensor to its canonical (older Hub) name.
/// Errors name the tensors that fit neither scheme or mix the two.
pub fn canonical_tensors(
    raw: HashMap<String, Tensor>,
) -> crate::Result<(NamingScheme, HashMap<String, Tensor>)> {
    let is_current = |n: &str| CURRENT_TO_CANONICAL.iter().any(|(p, _)| n.starts_with(p));
    let is_legacy = |n: &str| LEGACY_PREFIXES.iter().any(|p| n.starts_with(p));
    let mut names: Vec<&String> = raw.keys().collect();
    names.sort();
    let current: Vec<&String> = names.iter().copied().filter(|n| is_current(n)).collect();
    let legacy: Vec<&String> = names.iter().copied().filter(|n| is_legacy(n)).collect();
    let unknown: Vec<&String> =
        names.iter().copied().filter(|n| !is_current(n) && !is_legacy(n)).collect();
    let err = |report: String| Error::Checkpoint { source_name: "LLaVA".into(), report };
    if !unknown.is_empty() {
        return Err(err(format!(
            "{} tensors fit neither LLaVA naming scheme, e.g. {:?}",
            unknown.len(),
            &unknown[..unknown.len().min(5)]
        )));
    }
    let scheme = match (current.is_empty(), legacy.is_empty()) {
        (false, true) => NamingScheme::Current,
        (true, false) => NamingScheme::Legacy,
        (true, true) => return Err(err("no tensors".into())),
        (false, false) => {
            return Err(err(format!(
                "mixes the current names (e.g. {}) with the older ones (e.g. {})",
                current[0], legacy[0]
            )))
        }
    };
    let out = raw
        .into_iter()
        .map(|(name, t)| {
            let canonical = match scheme {
                // Detection above yields only Current or Legacy.
                NamingScheme::Legacy | NamingScheme::Original => name,
                NamingScheme::Current => CURRENT_TO_CANONICAL
                    .iter()
                    .find_map(|(cur, can)| name.strip_prefix(cur).map(|r| format!("{can}{r}")))
                    .expect("classified as current"),
            };
            (canonical, t)
        })
        .collect();
    Ok((scheme, out))
}

/// Check canonical tensors against the config: every missing tensor is named (under the file's
/// own scheme and canonically), and so is every tensor the model would not read.
pub fn check_tensors(
    cfg: &LlavaConfig,
    scheme: NamingScheme,
    tensors: &HashMap<String, Tensor>,
) -> crate::Result<()> {
    let expected: BTreeSet<String> = cfg.expected_tensors().into_iter().collect();
    let missing: Vec<String> = expected
        .iter()
        .filter(|n| !tensors.contains_key(*n))
        .map(|n| {
            let src = scheme.source_name(n);
            if src == *n {
                format!("missing tensor {n}")
            } else {
                format!("missing tensor {src} (canonical {n})")
            }
        })
        .collect();
    let mut unexpected: Vec<String> = tensors
        .keys()
        .filter(|n| !expected.contains(*n) && !known_unused(n))
        .map(|n| format!("unexpected tensor {}", scheme.source_name(n)))
        .collect();
    unexpected.sort();
    if missing.is_empty() && unexpected.is_empty() {
        return Ok(());
    }
    let report = missing.into_iter().chain(unexpected).collect::<Vec<_>>().join("; ");
    Err(Error::Checkpoint { source_name: format!("LLaVA ({scheme:?} names)"), report })
}

/// `config.json` and the canonical tensors of an HF LLaVA directory (`model.safetensors`, or the
/// shards listed in `model.safetensors.index.json`), checked against the config.
pub fn load_dir(
    dir: impl AsRef<Path>,
    device: &Device,
) -> crate::Result<(LlavaConfig, NamingScheme, HashMap<String, Tensor>)> {
    let dir = dir.as_ref();
    let cfg = LlavaConfig::from_file(dir.join("config.json"))?;
    let raw = TensorSet::from_hf_weights(dir, device)?.into_map();
    let (scheme, tensors) = canonical_tensors(raw)?;
    check_tensors(&cfg, scheme, &tensors)?;
    Ok((cfg, scheme, tensors))
}

/// HF `LlavaForConditionalGeneration` (CLIP tower + projector + LLaMA).
#[derive(Debug, Clone)]
pub struct LlavaForConditionalGeneration {
    vision_tower: ClipVisionModel,
    projector: MultiModalProjector,
    language_model: LlamaForCausalLm,
    feature_layers: Vec<usize>,
    cfg: LlavaConfig,
}

impl LlavaForConditionalGeneration {
    /// `vb` over canonical names ([`canonical_tensors`]).
    pub fn load(vb: VarBuilder, cfg: &LlavaConfig) -> crate::Result<Self> {
        Self::load_parts(vb.clone(), vb, cfg)
    }

    /// The tower and the LLM from `frozen`, the projector from `projector` (both over canonical
    /// names, e.g. a `VarMap` holding trainable projector weights).
    pub fn load_parts(
        frozen: VarBuilder,
        projector: VarBuilder,
        cfg: &LlavaConfig,
    ) -> crate::Result<Self> {
        cfg.validate()?;
        let vision_tower =
            ClipVisionModel::new(&cfg.vision_config, frozen.pp("vision_tower.vision_model"))?;
        let projector = MultiModalProjector::with_depth(
            cfg.projector_in_dim(),
            cfg.text_config.hidden_size,
            cfg.projector_depth,
            cfg.multimodal_projector_bias,
            Activation::from_hf(&cfg.projector_hidden_act)?,
            projector.pp("multi_modal_projector"),
        )?;
        let language_model = LlamaForCausalLm::load(frozen.pp("language_model"), &cfg.text_config)?;
        Ok(Self {
            vision_tower,
            projector,
            language_model,
            feature_layers: cfg.feature_layers()?,
            cfg: cfg.clone(),
        })
    }

    /// Tower and LLM as constants from `tensors` (canonical names, checked; bf16/f16 matrices kept
    /// as stored), the projector as f32 `Var`s put into `varmap` under their canonical names,
    /// initialised from `tensors`.
    pub fn with_trainable_projector(
        cfg: &LlavaConfig,
        tensors: &HashMap<String, Tensor>,
        varmap: &VarMap,
    ) -> crate::Result<Self> {
        Self::with_trainable(cfg, tensors, varmap, &|name| {
            name.starts_with("multi_modal_projector.")
        })
    }

    /// The tensors whose canonical name `trainable` accepts as `Var`s (f32) put into `varmap`,
    /// the others as constants: e.g. the projector and the LLM for LLaVA's stage 2.
    pub fn with_trainable(
        cfg: &LlavaConfig,
        tensors: &HashMap<String, Tensor>,
        varmap: &VarMap,
        trainable: &dyn Fn(&str) -> bool,
    ) -> crate::Result<Self> {
        let device = tensors
            .values()
            .next()
            .map(|t| t.device().clone())
            .ok_or_else(|| Error::Msg("no tensors".into()))?;
        let mut all = HashMap::new();
        {
            let mut vars = varmap.data().lock().expect("VarMap lock");
            for (name, t) in tensors {
                if trainable(name) {
                    // Trained in f32 whatever the checkpoint stores.
                    let var = Var::from_tensor(&t.to_dtype(DType::F32)?)?;
                    all.insert(name.clone(), var.as_tensor().clone());
                    vars.insert(name.clone(), var);
                } else {
                    all.insert(name.clone(), t.clone());
                }
            }
        }
        // Frozen matrices stay in the checkpoint's dtype, activations are f32; an f32 `Var`'s
        // tensor comes out of the builder as itself, so what is built from it is tracked.
        Self::load(crate::weights::frozen_var_builder(all, DType::F32, &device), cfg)
    }

    pub fn config(&self) -> &LlavaConfig {
        &self.cfg
    }

    pub fn vision_tower(&self) -> &ClipVisionModel {
        &self.vision_tower
    }

    pub fn projector(&self) -> &MultiModalProjector {
        &self.projector
    }

    pub fn language_model(&self) -> &LlamaForCausalLm {
        &self.language_model
    }

    /// HF `get_image_features` before the projector: the selected hidden states (layers
    /// concatenated on the feature axis), class token dropped for strategy `default`.
    // pixel_values: [B, C, H, W] -> [B, N, Dv * layers]
    pub fn vision_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let last = *self.feature_layers.iter().max().expect("validated non-empty");
        let hs = self.vision_tower.hidden_states(pixel_values, last)?;
        let pick = |i: usize| -> Result<Tensor> {
            let h = &hs[i];
            match self.cfg.vision_feature_select_strategy {
                FeatureSelectStrategy::Default => h.narrow(1, 1, h.dim(1)? - 1),
                FeatureSelectStrategy::Full => Ok(h.clone()),
            }
        };
        let parts = self.feature_layers.iter().map(|&i| pick(i)).collect::<Result<Vec<_>>>()?;
        if parts.len() == 1 {
            parts[0].contiguous()
        } else {
            Tensor::cat(&parts, 2)
        }
    }

    /// HF `get_image_features`: the projected image features.
    // pixel_values: [B, C, H, W] -> [B, N, H_text]
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.projector.forward(&self.vision_features(pixel_values)?)
    }

    /// `inputs_embeds` with the `<image>` positions of `input_ids` replaced, in order, by the rows
    /// of `image_features` ([images, N, H] or [rows, H]); a count mismatch is an error naming both.
    // input_ids: [B, L] -> [B, L, H]
    pub fn merge_image_features(
        &self,
        input_ids: &Tensor,
        image_features: &Tensor,
    ) -> Result<Tensor> {
        let (b, l) = input_ids.dims2()?;
        let ids = input_ids.to_dtype(DType::I64)?.to_vec2::<i64>()?;
        let image_id = self.cfg.image_token_index as i64;
        let feats = match image_features.rank() {
            2 => image_features.clone(),
            3 => image_features.flatten_to(1)?,
            r => candle_core::bail!(
                "image features must be [images, tokens, hidden] or [rows, hidden], got rank {r} {:?}",
                image_features.dims()
            ),
        };
        let (rows, h) = feats.dims2()?;
        let n_tokens = ids.iter().flatten().filter(|&&t| t == image_id).count();
        if n_tokens != rows {
            candle_core::bail!(
                "Image features and image tokens do not match: input_ids hold {n_tokens} image \
                 tokens (id {image_id}) but there are {rows} image feature rows (image features {:?})",
                image_features.dims()
            )
        }
        let hidden = self.cfg.text_config.hidden_size;
        if h != hidden {
            candle_core::bail!("image features have width {h}, the language model {hidden}")
        }
        // Image positions embed id 0 (their rows are replaced), so an image id past the vocabulary
        // is fine.
        let text_ids: Vec<u32> =
            ids.iter().flatten().map(|&t| if t == image_id { 0 } else { t as u32 }).collect();
        let dev = input_ids.device();
        let text_ids = Tensor::from_vec(text_ids, (b, l), dev)?;
        let embeds = self.language_model.embed(&text_ids)?.reshape((b * l, hidden))?;
        if n_tokens == 0 {
            return embeds.reshape((b, l, hidden));
        }
        let all = Tensor::cat(&[&embeds, &feats.to_dtype(embeds.dtype())?], 0)?;
        let mut k = 0u32;
        let index: Vec<u32> = ids
            .iter()
            .flatten()
            .enumerate()
            .map(|(p, &t)| {
                if t == image_id {
                    k += 1;
                    (b * l) as u32 + k - 1
                } else {
                    p as u32
                }
            })
            .collect();
        let index = Tensor::from_vec(index, b * l, dev)?;
        all.index_select(&index, 0)?.reshape((b, l, hidden))
    }

    /// Logits from `input_ids` and precomputed (projected) image features. `attention_mask`
    /// defaults to all ones and `position_ids` to `0..L` per row (HF `forward` without them).
    // input_ids: [B, L] -> logits [B, L, V] f32
    pub fn forward_with_features(
        &self,
        input_ids: &Tensor,
        image_features: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&[Vec<u32>]>,
    ) -> Result<Tensor> {
        let (b, l) = input_ids.dims2()?;
        let embeds = match image_features {
            Some(f) => self.merge_image_features(input_ids, f)?,
            None => {
                let d = self.cfg.text_config.hidden_size;
                let empty = Tensor::zeros((0, d), self.language_model.dtype(), input_ids.device())?;
                self.merge_image_features(input_ids, &empty)?
            }
        };
        let ones;
        let mask = match attention_mask {
            Some(m) => m,
            None => {
                ones = Tensor::ones((b, l), DType::U32, input_ids.device())?;
                &ones
            }
        };
        let default_pos;
        let pos = match position_ids {
            Some(p) => p,
            None => {
                default_pos = vec![(0..l as u32).collect::<Vec<_>>(); b];
                &default_pos
            }
        };
        self.language_model.forward_embeds_at(&embeds, mask, pos)
    }

    /// HF `forward(input_ids, pixel_values, attention_mask, position_ids)` logits.
    // input_ids: [B, L], pixel_values: [images, C, H, W] -> logits [B, L, V] f32
    pub fn forward(
        &self,
        input_ids: &Tensor,
        pixel_values: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&[Vec<u32>]>,
    ) -> Result<Tensor> {
        let feats = pixel_values.map(|pv| self.image_features(pv)).transpose()?;
        self.forward_with_features(input_ids, feats.as_ref(), attention_mask, position_ids)
    }
}
