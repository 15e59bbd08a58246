//! `ParamStore`: the named parameters of a run, ordered by name, with trainable and weight-decay
//! flags, safetensors save and a partial load that reports what did not match.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use candle_core::{Tensor, Var};
use candle_nn::VarMap;

use crate::{Error, Result};

/// Which LAVIS rule decides that a parameter gets no weight decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayRule {
    /// `Blip2Base.get_optimizer_params` (lavis/models/blip2_models/blip2.py, the branch taken for
    /// `vit_model: eva_clip_g`, i.e. every stage-1 config): no decay iff `len(shape) == 1` or the
    /// name ends in `.bias`. The 0-D `temp` and the 3-D `query_tokens` ARE decayed.
    Blip2,
    /// `BaseModel.get_optimizer_params` (lavis/models/base_model.py, also the original
    /// runner_base): no decay iff `ndim < 2` or the name contains `bias`, `ln` or `bn`.
    /// Here the 0-D `temp` is NOT decayed; `query_tokens` still is.
    LavisBase,
}

impl DecayRule {
    pub fn decays(self, name: &str, dims: &[usize]) -> bool {
        match self {
            DecayRule::Blip2 => !(dims.len() == 1 || name.ends_with(".bias")),
            DecayRule::LavisBase => {
                !(dims.len() < 2
                    || name.contains("bias")
                    || name.contains("ln")
                    || name.contains("bn"))
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Param {
    pub var: Var,
    pub trainable: bool,
    pub decay: bool,
}

/// Named parameters in name order (candle's `VarMap` is an unordered `HashMap`; optimizer state,
/// checkpoints and logs need a stable order).
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    params: BTreeMap<String, Param>,
}

/// Tensor and element counts of the three groups the optimizer sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCounts {
    pub decay_tensors: usize,
    pub decay_elems: usize,
    pub no_decay_tensors: usize,
    pub no_decay_elems: usize,
    pub frozen_tensors: usize,
    pub frozen_elems: usize,
}

impl fmt::Display for GroupCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trainable {} params in {} tensors (decay {} in {}, no decay {} in {}); frozen {} in {}",
            self.decay_elems + self.no_decay_elems,
            self.decay_tensors + self.no_decay_tensors,
            self.decay_elems,
            self.decay_tensors,
            self.no_decay_elems,
            self.no_decay_tensors,
            self.frozen_elems,
            self.frozen_tensors
        )
    }
}

/// What a partial load did. Shape mismatches are never loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamLoadReport {
    pub loaded: Vec<String>,
    /// In the store but not in the file: left as initialised.
    pub missing: Vec<String>,
    /// In the file but not in the store: ignored.
    pub unexpected: Vec<String>,
    /// `(name, store shape, file shape)`.
    pub shape_mismatch: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl ParamLoadReport {
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.shape_mismatch.is_empty()
    }
}

impl fmt::Display for ParamLoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loaded {}", self.loaded.len())?;
        if !self.missing.is_empty() {
            write!(f, "; missing {}: {}", self.missing.len(), self.missing.join(", "))?;
        }
        if !self.unexpected.is_empty() {
            write!(f, "; unexpected {}: {}", self.unexpected.len(), self.unexpected.join(", "))?;
        }
        for (name, want, got) in &self.shape_mismatch {
            write!(f, "; shape mismatch {name}: model {want:?} vs file {got:?}")?;
        }
        Ok(())
    }
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every var of `varmap` as trainable, decay flags from `rule`.
    pub fn from_varmap(varmap: &VarMap, rule: DecayRule) -> Self {
        let mut store = Self::new();
        let data = varmap.data().lock().expect("VarMap mutex poisoned");
        for (name, var) in data.iter() {
            store.insert(name, var.clone(), true, rule);
        }
        store
    }

    /// The vars of `varmaps` whose names pass `keep`, all trainable: a stage's trainable subset
    /// (stage two keeps the query path and the projection) built from the maps that hold them.
    pub fn from_varmaps_where(
        varmaps: &[&VarMap],
        rule: DecayRule,
        keep: impl Fn(&str) -> bool,
    ) -> Self {
        let mut store = Self::new();
        for vm in varmaps {
            let data = vm.data().lock().expect("VarMap mutex poisoned");
            for (name, var) in data.iter().filter(|(n, _)| keep(n)) {
                store.insert(name, var.clone(), true, rule);
            }
        }
        store
    }

    pub fn insert(&mut self, name: &str, var: Var, trainable: bool, rule: DecayRule) {
        let decay = rule.decays(name, var.dims());
        self.params.insert(name.to_string(), Param { var, trainable, decay });
    }

    /// Marks every parameter whose name starts with one of `prefixes` as frozen; returns how many.
    pub fn freeze_prefixes(&mut self, prefixes: &[&str]) -> usize {
        let mut n = 0;
        for (name, p) in self.params.iter_mut() {
            if prefixes.iter().any(|pre| name.starts_with(pre)) && p.trainable {
                p.trainable = false;
                n += 1;
            }
        }
        n
    }

    pub fn get(&self, name: &str) -> Option<&Param> {
        self.params.get(name)
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Param)> {
        self.params.iter().map(|(n, p)| (n.as_str(), p))
    }

    pub fn trainable(&self) -> impl Iterator<Item = (&str, &Param)> {
        self.iter().filter(|(_, p)| p.trainable)
    }

    pub fn counts(&self) -> GroupCounts {
        let mut c = GroupCounts::default();
        for (_, p) in self.iter() {
            let n = p.var.elem_count();
            match (p.trainable, p.decay) {
                (false, _) => (c.frozen_tensors += 1, c.frozen_elems += n),
                (true, true) => (c.decay_tensors += 1, c.decay_elems += n),
                (true, false) => (c.no_decay_tensors += 1, c.no_decay_elems += n),
            };
        }
        c
    }

    /// Counts per top-level module (`Qformer`, `vision_proj`, `temp`, …) and per group, one
    /// line each: what `blip2 pretrain` prints at start.
    pub fn summary(&self) -> String {
        let mut by_module: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for (name, p) in self.iter() {
            let module = name.split('.').next().unwrap_or(name);
            let e = by_module.entry(module).or_default();
            if p.trainable {
                e.0 += p.var.elem_count();
            } else {
                e.1 += p.var.elem_count();
            }
        }
        let mut out = format!("{}\n", self.counts());
        for (module, (trainable, frozen)) in by_module {
            out.push_str(&format!(
                "  {module:<24} trainable {trainable:>12}  frozen {frozen:>12}\n"
            ));
        }
        out
    }

    /// Trainable tensors as a name → tensor map (what `model.safetensors` holds).
    pub fn trainable_tensors(&self) -> HashMap<String, Tensor> {
        self.trainable().map(|(n, p)| (n.to_string(), p.var.as_tensor().clone())).collect()
    }

    /// Writes the trainable parameters (frozen weights are recorded by their own file, not copied).
    pub fn save_trainable(&self, path: &Path) -> Result<()> {
        candle_core::safetensors::save(&self.trainable_tensors(), path)
            .map_err(|e| Error::Msg(format!("{}: cannot write parameters: {e}", path.display())))
    }

    /// Sets every parameter that the file has with a matching shape; reports the rest.
    /// Use `load_strict` where anything but an exact match is an error (resume).
    pub fn load_partial(&self, path: &Path) -> Result<ParamLoadReport> {
        let file = read_safetensors(path)?;
        let mut report = ParamLoadReport::default();
        for (name, p) in self.iter() {
            match file.get(name) {
                None => report.missing.push(name.to_string()),
                Some(t) if t.dims() != p.var.dims() => report.shape_mismatch.push((
                    name.to_string(),
                    p.var.dims().to_vec(),
                    t.dims().to_vec(),
                )),
                Some(t) => {
                    let t = t.to_dtype(p.var.dtype())?.to_device(p.var.device())?;
                    p.var.set(&t)?;
                    report.loaded.push(name.to_string());
                }
            }
        }
        let mut unexpected: Vec<String> =
            file.keys().filter(|k| !self.params.contains_key(*k)).cloned().collect();
        unexpected.sort();
        report.unexpected = unexpected;
        Ok(report)
    }

    /// Like `load_partial` restricted to trainable parameters, failing unless names and shapes
    /// match exactly; nothing is modified on failure.
    pub fn load_trainable_strict(&self, path: &Path) -> Result<ParamLoadReport> {
        let file = read_safetensors(path)?;
        let mut report = ParamLoadReport::default();
        for (name, p) in self.trainable() {
            match file.get(name) {
                None => report.missing.push(name.to_string()),
                Some(t) if t.dims() != p.var.dims() => report.shape_mismatch.push((
                    name.to_string(),
                    p.var.dims().to_vec(),
                    t.dims().to_vec(),
                )),
                Some(_) => report.loaded.push(name.to_string()),
            }
        }
        let mut unexpected: Vec<String> = file
            .keys()
            .filter(|k| !self.params.get(*k).is_some_and(|p| p.trainable))
            .cloned()
            .collect();
        unexpected.sort();
        report.unexpected = unexpected;
        if !report.is_exact() {
            return Err(Error::Checkpoint {
                source_name: path.display().to_string(),
                report: report.to_string(),
            });
        }
        // Our checkpoints keep the parameters' dtype: another one means a foreign file, and a
        // silent conversion would lose precision.
        if let Some(name) =
            report.loaded.iter().find(|n| file[*n].dtype() != self.params[*n].var.dtype())
        {
            return Err(Error::Checkpoint {
                source_name: path.display().to_string(),
                report: format!(
                    "tensor {name} has dtype {:?} where the model has {:?}",
                    file[name].dtype(),
                    self.params[name].var.dtype()
                ),
            });
        }
        for name in &report.loaded {
            let p = &self.params[name];
            let t = file[name].to_dtype(p.var.dtype())?.to_device(p.var.device())?;
            p.var.set(&t)?;
        }
        Ok(report)
    }
}

pub(crate) fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::io(path, std::io::Error::from(std::io::ErrorKind::NotFound)));
    }
    candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .map_err(|e| Error::Msg(format!("{}: cannot read safetensors: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn var(dims: &[usize]) -> Var {
        Var::zeros(dims, DType::F32, &Device::Cpu).unwrap()
    }

    /// The names and kinds of parameter BLIP-2 stage 1 actually has in LAVIS `Blip2Qformer`
    /// (0-D `temp`, 3-D `query_tokens`, 1-D LayerNorm weights and biases, matrices), at toy sizes.
    fn blip2_like(rule: DecayRule) -> ParamStore {
        let mut s = ParamStore::new();
        for (n, d) in [
            ("temp", vec![]),
            ("query_tokens", vec![1, 4, 8]),
            ("ln_vision.weight", vec![8]),
            ("ln_vision.bias", vec![8]),
            ("Qformer.bert.embeddings.word_embeddings.weight", vec![10, 8]),
            ("Qformer.bert.encoder.layer.0.attention.self.query.weight", vec![8, 8]),
            ("Qformer.bert.encoder.layer.0.attention.self.query.bias", vec![8]),
            ("Qformer.bert.encoder.layer.0.attention.output.LayerNorm.weight", vec![8]),
            ("vision_proj.weight", vec![4, 8]),
        ] {
            s.insert(n, var(&d), true, rule);
        }
        s
    }

    fn decayed(s: &ParamStore) -> Vec<&str> {
        s.iter().filter(|(_, p)| p.decay).map(|(n, _)| n).collect()
    }

    #[test]
    fn blip2_rule_decays_temp_and_query_tokens() {
        // Reference: Blip2Base.get_optimizer_params, `len(param.shape) == 1 or name.endswith(".bias")`.
        let s = blip2_like(DecayRule::Blip2);
        assert_eq!(
            decayed(&s),
            vec![
                "Qformer.bert.embeddings.word_embeddings.weight",
                "Qformer.bert.encoder.layer.0.attention.self.query.weight",
                "query_tokens",
                "temp",
                "vision_proj.weight",
            ]
        );
    }

    #[test]
    fn lavis_base_rule_exempts_zero_dim_temp() {
        // Reference: BaseModel.get_optimizer_params, `p.ndim < 2 or "bias" in n or "ln" in n or "bn" in n`.
        let s = blip2_like(DecayRule::LavisBase);
        assert_eq!(
            decayed(&s),
            vec![
                "Qformer.bert.embeddings.word_embeddings.weight",
                "Qformer.bert.encoder.layer.0.attention.self.query.weight",
                "query_tokens",
                "vision_proj.weight",
            ]
        );
        // The substring test catches 2-D names too (e.g. a hypothetical "kiln.weight").
        assert!(!DecayRule::LavisBase.decays("kiln.weight", &[2, 2]));
        assert!(DecayRule::Blip2.decays("kiln.weight", &[2, 2]));
    }

    #[test]
    fn counts_per_group() {
        let mut s = blip2_like(DecayRule::Blip2);
        assert_eq!(s.freeze_prefixes(&["ln_vision."]), 2);
        let c = s.counts();
        assert_eq!(c.frozen_tensors, 2);
        assert_eq!(c.frozen_elems, 16);
        assert_eq!(c.decay_tensors, 5);
        assert_eq!(c.decay_elems, 1 + 32 + 80 + 64 + 32);
        assert_eq!(c.no_decay_tensors, 2);
        assert_eq!(c.no_decay_elems, 16);
        assert!(c.to_string().contains("trainable 225 params in 7 tensors"));
        let summary = s.summary();
        assert!(
            summary
                .contains("  ln_vision                trainable            0  frozen           16"),
            "{summary}"
        );
        assert!(summary.contains("  Qformer                  trainable          160"), "{summary}");
    }

    #[test]
    fn partial_load_reports_missing_unexpected_and_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let dev = Device::Cpu;
        let mut file = HashMap::new();
        file.insert("a".to_string(), Tensor::new(&[1f32, 2.], &dev).unwrap());
        file.insert("b".to_string(), Tensor::new(&[1f32, 2., 3.], &dev).unwrap());
        file.insert("extra".to_string(), Tensor::new(&[0f32], &dev).unwrap());
        candle_core::safetensors::save(&file, &path).unwrap();

        let mut s = ParamStore::new();
        s.insert("a", var(&[2]), true, DecayRule::Blip2);
        s.insert("b", var(&[2]), true, DecayRule::Blip2);
        s.insert("c", var(&[2]), true, DecayRule::Blip2);
        let r = s.load_partial(&path).unwrap();
        assert_eq!(r.loaded, vec!["a"]);
        assert_eq!(r.missing, vec!["c"]);
        assert_eq!(r.unexpected, vec!["extra"]);
        assert_eq!(r.shape_mismatch, vec![("b".to_string(), vec![2], vec![3])]);
        assert_eq!(s.get("a").unwrap().var.to_vec1::<f32>().unwrap(), vec![1., 2.]);
        assert_eq!(s.get("b").unwrap().var.to_vec1::<f32>().unwrap(), vec![0., 0.]);

        let err = s.load_trainable_strict(&path).unwrap_err().to_string();
        assert!(err.contains("missing 1: c") && err.contains("unexpected 1: extra"), "{err}");
        assert!(err.contains("shape mismatch b: model [2] vs file [3]"), "{err}");
    }

    #[test]
    fn save_then_strict_load_round_trips_trainable_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let mut s = ParamStore::new();
        let dev = Device::Cpu;
        s.insert("w", Var::new(&[[1f32, 2.], [3., 4.]], &dev).unwrap(), true, DecayRule::Blip2);
        s.insert("frozen", Var::new(&[9f32], &dev).unwrap(), false, DecayRule::Blip2);
        s.save_trainable(&path).unwrap();
        let saved = read_safetensors(&path).unwrap();
        assert_eq!(saved.len(), 1, "frozen weights must not be written");

        s.get("w").unwrap().var.set(&Tensor::zeros((2, 2), DType::F32, &dev).unwrap()).unwrap();
        let r = s.load_trainable_strict(&path).unwrap();
        assert_eq!(r.loaded, vec!["w"]);
        assert_eq!(
            s.get("w").unwrap().var.to_vec2::<f32>().unwrap(),
            vec![vec![1., 2.], vec![3., 4.]]
        );
        let missing = read_safetensors(&dir.path().join("nope.safetensors")).unwrap_err();
        assert!(missing.to_string().contains("nope.safetensors"));
    }
}
