//! Checkpoint loading: HF Hub directories and LAVIS `.pth` files into a [`Blip2Qformer`],
//! strictly (every missing, unexpected, misshaped or wrongly typed tensor is refused by name).
//!
//! Sources are read into a [`TensorSet`] keyed by canonical names ([`names`]); sets can be
//! merged (a LAVIS stage-one `.pth` has no ViT, so it is merged with the ViT of an HF
//! directory). [`load`] checks a set against the table for the model's parts and builds the
//! model either with trainable `Var`s (in a [`VarMap`]) or with plain tensors.

pub mod bert;
pub mod lavis;
pub mod names;
mod pickle;
pub mod pth;
pub mod report;
mod safetensors_file;
mod stored_dtype;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::config::Blip2Config;
use crate::error::{Error, Result};
use crate::model::{Blip2Qformer, ModelParts, DEFAULT_TEMP};
pub use lavis::{
    lavis_projection_to_hf, read_lavis_pth, read_lavis_safetensors, to_lavis_state_dict,
    write_lavis_pth, LAVIS_LN_VISION_EPS,
};
pub use names::{canonical_tensors, Group, TensorSpec};
pub use report::LoadReport;
pub use safetensors_file::read_safetensors;
pub use stored_dtype::frozen_var_builder;

/// Tensors under canonical names, with where each came from.
#[derive(Debug, Clone, Default)]
pub struct TensorSet {
    tensors: BTreeMap<String, Tensor>,
    origin: BTreeMap<String, String>,
    ignored: Vec<(String, String)>,
    ln_vision_eps: Option<f64>,
}

impl TensorSet {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: String, tensor: Tensor, source: &str) {
        self.origin.insert(name.clone(), source.to_string());
        self.tensors.insert(name, tensor);
    }

    pub(crate) fn ignore(&mut self, name: String, why: &str) {
        self.ignored.push((name, why.to_string()));
    }

    pub(crate) fn set_ln_vision_eps(&mut self, eps: f64) {
        self.ln_vision_eps = Some(eps);
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// `ln_vision` eps implied by the source of `vision_model.post_layernorm` (LAVIS: 1e-5),
    /// `None` for HF sources (use the config's `layer_norm_eps`).
    pub fn ln_vision_eps(&self) -> Option<f64> {
        self.ln_vision_eps
    }

    /// Canonical-named safetensors file(s) (HF layout), every tensor in its stored dtype.
    pub fn from_safetensors(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let source = path.display().to_string();
        // Tensor by tensor in the stored dtype: no second copy of the file is held.
        let tensors = read_safetensors(path, device)?;
        let mut set = Self::empty();
        for (name, t) in tensors {
            set.insert(name, t, &source);
        }
        Ok(set)
    }

    /// An HF Hub directory as it lies: `config.json` plus `model.safetensors` or a sharded
    /// `model.safetensors.index.json`.
    pub fn from_hf_dir(dir: impl AsRef<Path>, device: &Device) -> Result<(Blip2Config, Self)> {
        let dir = dir.as_ref();
        let cfg = Blip2Config::from_file(dir.join("config.json"))?;
        Ok((cfg, Self::from_hf_weights(dir, device)?))
    }

    /// The weights of an HF Hub directory, whatever its model: `model.safetensors`, or the shards
    /// that `model.safetensors.index.json` lists (every tensor it lists must be in a shard).
    pub fn from_hf_weights(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.exists() {
            return Self::from_safetensors(&single, device);
        }
        if !index.exists() {
            return Err(Error::Msg(format!(
                "{}: neither model.safetensors nor model.safetensors.index.json",
                dir.display()
            )));
        }
        Self::from_shard_index(&index, |shard| Self::from_safetensors(shard, device))
    }

    /// The shards an HF `*.index.json` lists in its `weight_map`, each read by `read_shard`
    /// (paths relative to the index); every tensor it lists must be in a shard.
    pub fn from_shard_index(
        index: &Path,
        read_shard: impl Fn(&Path) -> Result<Self>,
    ) -> Result<Self> {
        let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::json(index, e))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::Msg(format!("{}: no \"weight_map\" object", index.display())))?;
        let mut files: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
        files.sort();
        files.dedup();
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut set = Self::empty();
        for f in files {
            set = set.merge(read_shard(&dir.join(f))?)?;
        }
        let listed: std::collections::BTreeSet<&str> = map.keys().map(|k| k.as_str()).collect();
        let missing: Vec<&str> = listed.iter().filter(|k| !set.contains(k)).copied().collect();
        if !missing.is_empty() {
            return Err(Error::Checkpoint {
                source_name: index.display().to_string(),
                report: format!("index lists tensors no shard holds: {}", missing.join(", ")),
            });
        }
        Ok(set)
    }

    /// The tensors by name, for a `VarBuilder::from_tensors`.
    pub fn into_map(self) -> std::collections::HashMap<String, Tensor> {
        self.tensors.into_iter().collect()
    }

    /// Union of two sets; a name in both is an error (naming all of them).
    pub fn merge(mut self, other: Self) -> Result<Self> {
        let dup: Vec<String> =
            other.tensors.keys().filter(|k| self.tensors.contains_key(*k)).cloned().collect();
        if !dup.is_empty() {
            return Err(Error::Msg(format!("tensors given by two sources: {}", dup.join(", "))));
        }
        if other.tensors.contains_key("vision_model.post_layernorm.weight") {
            self.ln_vision_eps = other.ln_vision_eps;
        }
        for (k, t) in other.tensors {
            let src = other.origin.get(&k).cloned().unwrap_or_default();
            self.insert(k, t, &src);
        }
        self.ignored.extend(other.ignored);
        Ok(self)
    }

    /// Keeps the tensors whose name satisfies `keep` (e.g. only the frozen ViT of an HF directory).
    pub fn filter(mut self, keep: impl Fn(&str) -> bool) -> Self {
        self.tensors.retain(|k, _| keep(k));
        self.origin.retain(|k, _| keep(k));
        if !self.tensors.contains_key("vision_model.post_layernorm.weight") {
            self.ln_vision_eps = None;
        }
        self
    }

    /// Only the frozen ViT (`vision_model.*` without `post_layernorm`).
    pub fn vision_encoder_only(self) -> Self {
        self.filter(|n| {
            n.starts_with("vision_model.") && !n.starts_with("vision_model.post_layernorm.")
        })
    }

    fn source_names(&self) -> String {
        let mut s: Vec<&str> = self.origin.values().map(|s| s.as_str()).collect();
        s.sort();
        s.dedup();
        s.join(" + ")
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Build trainable parts (everything but the ViT) as `Var`s in a `VarMap`.
    pub trainable: bool,
    /// Accept tensors listed by [`names::known_unused`] (LLM weights), reporting them.
    pub allow_known_unused: bool,
    /// dtype of the frozen ViT (the Q-Former side is always f32, as in HF and LAVIS).
    pub vision_dtype: DType,
    /// Overrides the `ln_vision` eps implied by the source.
    pub ln_vision_eps: Option<f64>,
    pub device: Device,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            trainable: false,
            allow_known_unused: false,
            vision_dtype: DType::F32,
            ln_vision_eps: None,
            device: Device::Cpu,
        }
    }
}

pub struct LoadedModel {
    pub model: Blip2Qformer,
    /// The trainable `Var`s (when `LoadOptions::trainable`), under canonical names.
    pub varmap: Option<VarMap>,
    pub report: LoadReport,
}

/// Parts a tensor set provides for this config: the LM head when any `cls.predictions.*` is present.
pub fn detect_parts(cfg: &Blip2Config, set: &TensorSet) -> ModelParts {
    let lm = set.names().any(|n| n.starts_with("cls.predictions."));
    ModelParts::from_config(cfg, lm)
}

/// Checks `set` against the table for `parts` without building anything.
pub fn check(
    cfg: &Blip2Config,
    set: &TensorSet,
    parts: ModelParts,
    allow_known_unused: bool,
) -> LoadReport {
    let specs = canonical_tensors(cfg, parts);
    let mut report = LoadReport { ignored: set.ignored.clone(), ..Default::default() };
    let expected: std::collections::HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    for s in &specs {
        match set.get(&s.name) {
            Some(t) => {
                if !t.dtype().is_float() {
                    report.wrong_dtype.push((s.name.clone(), t.dtype()));
                } else if t.dims() != s.shape.as_slice() {
                    report.shape_mismatch.push((
                        s.name.clone(),
                        s.shape.clone(),
                        t.dims().to_vec(),
                    ));
                } else {
                    report.loaded += 1;
                }
            }
            None if s.group == Group::Temp => {
                report.defaulted.push(format!("temp = {DEFAULT_TEMP}"))
            }
            None => report.missing.push(s.name.clone()),
        }
    }
    for name in set.names() {
        if expected.contains(name) {
            continue;
        }
        match names::known_unused(name) {
            Some(why) if allow_known_unused => {
                report.known_unused.push((name.to_string(), why.to_string()))
            }
            _ => report.unexpected.push(name.to_string()),
        }
    }
    report
}

/// Strictly loads `set` into a model with `parts`.
pub fn load(
    cfg: &Blip2Config,
    set: &TensorSet,
    parts: ModelParts,
    opts: &LoadOptions,
) -> Result<LoadedModel> {
    cfg.validate()?;
    let report = check(cfg, set, parts, opts.allow_known_unused);
    if !report.is_strict_ok() {
        return Err(Error::Checkpoint {
            source_name: set.source_names(),
            report: report.problems(),
        });
    }
    let specs = canonical_tensors(cfg, parts);
    let dev = &opts.device;
    let mut frozen = HashMap::new();
    let mut rest = HashMap::new();
    for s in &specs {
        let t = match set.get(&s.name) {
            Some(t) => t.clone(),
            None => Tensor::new(DEFAULT_TEMP as f32, dev)?, // only temp can be absent after check()
        };
        if s.group.trainable() {
            rest.insert(s.name.clone(), t.to_dtype(DType::F32)?.to_device(dev)?);
        } else {
            frozen.insert(s.name.clone(), t.to_dtype(opts.vision_dtype)?.to_device(dev)?);
        }
    }
    let frozen_vb = VarBuilder::from_tensors(frozen, opts.vision_dtype, dev);
    let eps = opts
        .ln_vision_eps
        .or(set.ln_vision_eps())
        .or(cfg.ln_vision_eps)
        .unwrap_or(cfg.vision_config.layer_norm_eps);
    let (model, varmap) = if opts.trainable {
        let varmap = VarMap::new();
        {
            let mut data =
                varmap.data().lock().map_err(|_| Error::Msg("VarMap lock poisoned".into()))?;
            for (name, t) in rest {
                data.insert(name, Var::from_tensor(&t)?);
            }
        }
        let n_before = varmap.all_vars().len();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, dev);
        let model = Blip2Qformer::new(cfg, parts, eps, frozen_vb, vb)?;
        // A VarMap creates (random) variables for names it lacks: none may appear, or the
        // name table and the model disagree.
        if varmap.all_vars().len() != n_before {
            return Err(Error::Msg(
                "internal: model requested tensors missing from the name table".into(),
            ));
        }
        (model, Some(varmap))
    } else {
        let vb = VarBuilder::from_tensors(rest, DType::F32, dev);
        (Blip2Qformer::new(cfg, parts, eps, frozen_vb, vb)?, None)
    };
    Ok(LoadedModel { model, varmap, report })
}

/// An HF Hub directory (`Blip2ForImageTextRetrieval`, or the vision + Q-Former part of
/// `Blip2ForConditionalGeneration` with `allow_known_unused`).
pub fn load_hf_dir(dir: impl AsRef<Path>, opts: &LoadOptions) -> Result<LoadedModel> {
    let (cfg, set) = TensorSet::from_hf_dir(dir, &opts.device)?;
    let parts = detect_parts(&cfg, &set);
    load(&cfg, &set, parts, opts)
}
