//! Starting a Q-Former from a BERT checkpoint (HF layout), as LAVIS does for stage one.
//!
//! `Blip2Base.init_Qformer` loads `BertLMHeadModel.from_pretrained("bert-base-uncased")` with
//! cross-attention added every `cross_attention_freq` layers; `Blip2Qformer.__init__` then grows
//! the vocabulary by one row for `[DEC]` (`resize_token_embeddings`) and copies every text
//! feed-forward into the query feed-forward (`param.copy_(state_dict[name.replace("_query", "")])`).
//! Copied from BERT: word/position embeddings and their LayerNorm, every layer's self-attention,
//! the text feed-forward (twice: text and query) and the MLM head transform and bias. Fresh:
//! cross-attention, the `[DEC]` row (N(0, 0.02)) and its MLM bias (0), query tokens, heads,
//! `ln_vision`, `temp`.
//!
//! [`BertCheckpoint::qformer_tensors`] maps a checkpoint to canonical Q-Former names;
//! [`overlay`] writes such a set over a freshly initialized model (`train::init::FreshModel`),
//! keeping the fresh rows the BERT vocabulary lacks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use serde::Deserialize;

use super::names::{canonical_tensors, Group};
use super::TensorSet;
use crate::config::Blip2Config;
use crate::error::{Error, Result};
use crate::model::ModelParts;

/// The fields of a BERT `config.json` the Q-Former shape depends on (bert-base-uncased defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    pub initializer_range: f64,
}

impl Default for BertConfig {
    fn default() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            max_position_embeddings: 512,
            layer_norm_eps: 1e-12,
            initializer_range: 0.02,
        }
    }
}

/// Tensors of a BERT checkpoint the Q-Former has no place for, with the reason.
fn unused_reason(name: &str) -> Option<&'static str> {
    if name == "bert.embeddings.token_type_embeddings.weight" {
        Some("LAVIS's Q-Former has no token type embeddings")
    } else if name == "bert.embeddings.position_ids" {
        Some("buffer (arange), not a parameter")
    } else if name.starts_with("bert.pooler.") {
        Some("pooler (BertLMHeadModel has none)")
    } else if name.starts_with("cls.seq_relationship.") {
        Some("next-sentence head")
    } else if name == "cls.predictions.decoder.weight" {
        Some("tied to bert.embeddings.word_embeddings.weight")
    } else if name == "cls.predictions.decoder.bias" {
        Some("same tensor as cls.predictions.bias")
    } else {
        None
    }
}

/// Canonical Q-Former name -> BERT checkpoint name; `None` for tensors BERT does not have
/// (cross-attention). The query FFN maps to the text FFN, as LAVIS copies it.
pub fn canonical_to_bert(name: &str) -> Option<String> {
    if name.contains(".crossattention.") {
        return None;
    }
    let name = name.replace("_query.", ".");
    if let Some(rest) = name.strip_prefix("embeddings.") {
        Some(format!("bert.embeddings.{rest}"))
    } else if let Some(rest) = name.strip_prefix("qformer.layernorm.") {
        Some(format!("bert.embeddings.LayerNorm.{rest}"))
    } else if let Some(rest) = name.strip_prefix("qformer.encoder.layer.") {
        Some(format!(
            "bert.encoder.layer.{}",
            rest.replace(".attention.attention.", ".attention.self.")
        ))
    } else if name.starts_with("cls.predictions.") {
        Some(name)
    } else {
        None
    }
}

/// Names as transformers loads them: `bert.` for a bare `BertModel` checkpoint, and the
/// pre-2019 `LayerNorm.gamma/beta` (the original bert-base-uncased `pytorch_model.bin`).
fn normalize(name: &str) -> String {
    let mut n = name.to_string();
    if !n.starts_with("bert.") && !n.starts_with("cls.") {
        n = format!("bert.{n}");
    }
    if n.contains("LayerNorm.") {
        if let Some(stem) = n.strip_suffix(".gamma") {
            n = format!("{stem}.weight");
        } else if let Some(stem) = n.strip_suffix(".beta") {
            n = format!("{stem}.bias");
        }
    }
    n
}

/// A BERT directory: `config.json` plus `model.safetensors` or `pytorch_model.bin`.
#[derive(Debug, Clone)]
pub struct BertCheckpoint {
    pub config: BertConfig,
    /// Under normalized names (`bert.` prefix, `LayerNorm.weight/bias`).
    tensors: BTreeMap<String, Tensor>,
    /// The weights file, for messages.
    pub source: PathBuf,
    pub config_path: PathBuf,
}

impl BertCheckpoint {
    pub fn from_dir(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let config: BertConfig =
            serde_json::from_str(&text).map_err(|e| Error::json(&config_path, e))?;
        let st = dir.join("model.safetensors");
        let bin = dir.join("pytorch_model.bin");
        let (source, raw): (PathBuf, Vec<(String, Tensor)>) = if st.exists() {
            let t = candle_core::safetensors::load(&st, device).map_err(|e| {
                Error::Msg(format!("{}: cannot read safetensors: {e}", st.display()))
            })?;
            (st, t.into_iter().collect())
        } else if bin.exists() {
            let t = candle_core::pickle::read_all(&bin).map_err(|e| {
                Error::Msg(format!("{}: cannot read torch checkpoint: {e}", bin.display()))
            })?;
            let t = t
                .into_iter()
                .map(|(n, t)| Ok((n, t.to_device(device)?)))
                .collect::<Result<Vec<_>>>()?;
            (bin, t)
        } else {
            return Err(Error::Msg(format!(
                "{}: neither model.safetensors nor pytorch_model.bin (a BERT checkpoint in HF layout)",
                dir.display()
            )));
        };
        let mut tensors = BTreeMap::new();
        for (name, t) in raw {
            let n = normalize(&name);
            if tensors.insert(n.clone(), t).is_some() {
                return Err(Error::Msg(format!(
                    "{}: two tensors are named {n} once normalized",
                    source.display()
                )));
            }
        }
        Ok(Self { config, tensors, source, config_path })
    }

    /// Refuses a BERT whose shape or semantics differ from the Q-Former config, naming both fields.
    pub fn check_fits(&self, cfg: &Blip2Config) -> Result<()> {
        let (b, q) = (&self.config, &cfg.qformer_config);
        let file = self.config_path.display();
        let usize_fields = [
            ("hidden_size", b.hidden_size, q.hidden_size),
            ("num_hidden_layers", b.num_hidden_layers, q.num_hidden_layers),
            ("num_attention_heads", b.num_attention_heads, q.num_attention_heads),
            ("intermediate_size", b.intermediate_size, q.intermediate_size),
            ("max_position_embeddings", b.max_position_embeddings, q.max_position_embeddings),
        ];
        for (field, bert, qformer) in usize_fields {
            if bert != qformer {
                return Err(Error::Config(format!(
                    "BERT {file}: {field} is {bert} but the Q-Former's qformer_config.{field} is {qformer}"
                )));
            }
        }
        if b.vocab_size + 1 != q.vocab_size {
            return Err(Error::Config(format!(
                "BERT {file}: vocab_size is {} but the Q-Former's qformer_config.vocab_size is {} (expected BERT's + 1 for [DEC])",
                b.vocab_size, q.vocab_size
            )));
        }
        if b.hidden_act != q.hidden_act {
            return Err(Error::Config(format!(
                "BERT {file}: hidden_act is {} but the Q-Former's qformer_config.hidden_act is {}",
                b.hidden_act, q.hidden_act
            )));
        }
        if b.layer_norm_eps != q.layer_norm_eps {
            return Err(Error::Config(format!(
                "BERT {file}: layer_norm_eps is {} but the Q-Former's qformer_config.layer_norm_eps is {}",
                b.layer_norm_eps, q.layer_norm_eps
            )));
        }
        if !q.use_qformer_text_input {
            return Err(Error::Config(format!(
                "starting from BERT {file} needs a Q-Former with a text side (qformer_config.use_qformer_text_input = true)"
            )));
        }
        Ok(())
    }

    /// Every tensor LAVIS copies from BERT, under canonical Q-Former names (the query FFN as a
    /// copy of the text FFN). The word embeddings and `cls.predictions.bias` keep BERT's
    /// vocabulary (one row less than the Q-Former): [`overlay`] keeps the fresh last row.
    /// Missing, misshaped or unknown tensors are all named in one error.
    pub fn qformer_tensors(&self, cfg: &Blip2Config) -> Result<TensorSet> {
        self.check_fits(cfg)?;
        let parts = ModelParts::from_config(cfg, true);
        let source = self.source.display().to_string();
        let mut set = TensorSet::empty();
        let mut seen = BTreeSet::new();
        let (mut missing, mut misshaped) = (Vec::new(), Vec::new());
        let copied_groups = [Group::TextEmbeddings, Group::QFormer, Group::TextFfn, Group::LmHead];
        for spec in canonical_tensors(cfg, parts) {
            if !copied_groups.contains(&spec.group) {
                continue;
            }
            let Some(bert_name) = canonical_to_bert(&spec.name) else { continue };
            let mut want = spec.shape.clone();
            if is_vocab_sized(&spec.name) {
                want[0] = self.config.vocab_size;
            }
            // The text FFN is looked up twice (text and query copy): report it once.
            let first = !seen.contains(&bert_name);
            // Not collapsible: a misshaped tensor seen again must match no other arm.
            #[allow(clippy::collapsible_match)]
            match self.tensors.get(&bert_name) {
                None if first => missing.push(bert_name.clone()),
                None => {}
                Some(t) if !t.dtype().is_float() || t.dims() != want.as_slice() => {
                    if first {
                        misshaped.push(format!(
                            "{bert_name} ({:?} {:?}, expected {want:?} for {})",
                            t.dtype(),
                            t.dims(),
                            spec.name
                        ))
                    }
                }
                Some(t) => {
                    set.insert(spec.name.clone(), t.to_dtype(candle_core::DType::F32)?, &source);
                }
            }
            seen.insert(bert_name);
        }
        let unexpected: Vec<&str> = self
            .tensors
            .keys()
            .filter(|k| !seen.contains(*k) && unused_reason(k).is_none())
            .map(String::as_str)
            .collect();
        let mut problems = Vec::new();
        if !missing.is_empty() {
            problems.push(format!("missing {}: {}", missing.len(), missing.join(", ")));
        }
        if !misshaped.is_empty() {
            problems.push(format!("wrong shape {}: {}", misshaped.len(), misshaped.join(", ")));
        }
        if !unexpected.is_empty() {
            problems.push(format!("unexpected {}: {}", unexpected.len(), unexpected.join(", ")));
        }
        if !problems.is_empty() {
            return Err(Error::Checkpoint {
                source_name: format!("BERT {source}"),
                report: problems.join("; "),
            });
        }
        for name in self.tensors.keys().filter(|k| !seen.contains(*k)) {
            if let Some(why) = unused_reason(name) {
                set.ignore(name.clone(), why);
            }
        }
        Ok(set)
    }
}

/// Tensors with one row per token: BERT has one row fewer than the Q-Former (`[DEC]`).
fn is_vocab_sized(name: &str) -> bool {
    name == "embeddings.word_embeddings.weight" || name == "cls.predictions.bias"
}

/// What [`overlay`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OverlayReport {
    /// Variables overwritten from the set (fully, or all but the grown rows).
    pub copied: Vec<String>,
    /// Variables the set does not cover: they keep their fresh values.
    pub fresh: Vec<String>,
    /// (name, rows kept fresh) for tensors the set had fewer rows of (the `[DEC]` row).
    pub grown: Vec<(String, usize)>,
}

/// Writes `set` over the freshly initialized `vars`. A set tensor with fewer rows than its
/// variable (the BERT vocabulary) fills the first rows; the rest keep their fresh values, as
/// `resize_token_embeddings` leaves them. Every set tensor must find its variable.
pub fn overlay(vars: &[(String, Var)], set: &TensorSet) -> Result<OverlayReport> {
    let by_name: BTreeMap<&str, &Var> = vars.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let mut report = OverlayReport::default();
    let orphans: Vec<&str> = set.names().filter(|n| !by_name.contains_key(n)).collect();
    if !orphans.is_empty() {
        return Err(Error::Msg(format!(
            "{}: tensors the model does not have: {}",
            set.source_names(),
            orphans.join(", ")
        )));
    }
    for (name, var) in by_name {
        let Some(t) = set.get(name) else {
            report.fresh.push(name.to_string());
            continue;
        };
        let t = t.to_dtype(var.dtype())?.to_device(var.device())?;
        let (want, got) = (var.dims(), t.dims());
        if want == got {
            var.set(&t)?;
        } else if !want.is_empty()
            && want.len() == got.len()
            && want[1..] == got[1..]
            && got[0] < want[0]
        {
            let rows = want[0] - got[0];
            let tail = var.as_tensor().narrow(0, got[0], rows)?;
            var.set(&Tensor::cat(&[&t, &tail], 0)?)?;
            report.grown.push((name.to_string(), rows));
        } else {
            return Err(Error::Msg(format!(
                "{}: {name} has shape {got:?}, the model's is {want:?}",
                set.source_names()
            )));
        }
        report.copied.push(name.to_string());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_bert_and_lavis_query_copies() {
        let cases = [
            ("embeddings.word_embeddings.weight", Some("bert.embeddings.word_embeddings.weight")),
            ("qformer.layernorm.bias", Some("bert.embeddings.LayerNorm.bias")),
            (
                "qformer.encoder.layer.3.attention.attention.key.weight",
                Some("bert.encoder.layer.3.attention.self.key.weight"),
            ),
            (
                "qformer.encoder.layer.3.attention.output.LayerNorm.weight",
                Some("bert.encoder.layer.3.attention.output.LayerNorm.weight"),
            ),
            (
                "qformer.encoder.layer.1.intermediate_query.dense.weight",
                Some("bert.encoder.layer.1.intermediate.dense.weight"),
            ),
            (
                "qformer.encoder.layer.1.output_query.LayerNorm.bias",
                Some("bert.encoder.layer.1.output.LayerNorm.bias"),
            ),
            ("qformer.encoder.layer.0.crossattention.attention.query.weight", None),
            (
                "cls.predictions.transform.dense.weight",
                Some("cls.predictions.transform.dense.weight"),
            ),
            ("query_tokens", None),
            ("vision_model.post_layernorm.weight", None),
        ];
        for (canonical, bert) in cases {
            assert_eq!(canonical_to_bert(canonical).as_deref(), bert, "{canonical}");
        }
        assert_eq!(normalize("embeddings.LayerNorm.gamma"), "bert.embeddings.LayerNorm.weight");
        assert_eq!(
            normalize("bert.encoder.layer.0.output.LayerNorm.beta"),
            "bert.encoder.layer.0.output.LayerNorm.bias"
        );
        assert_eq!(normalize("cls.predictions.bias"), "cls.predictions.bias");
    }

    #[test]
    fn overlay_keeps_the_fresh_rows_bert_lacks() {
        let dev = Device::Cpu;
        let var = Var::from_tensor(&Tensor::full(9f32, (3, 2), &dev).unwrap()).unwrap();
        let other = Var::from_tensor(&Tensor::full(7f32, 2, &dev).unwrap()).unwrap();
        let vars = vec![("w".to_string(), var.clone()), ("b".to_string(), other.clone())];
        let mut set = TensorSet::empty();
        set.insert("w".into(), Tensor::new(&[[1f32, 2.], [3., 4.]], &dev).unwrap(), "x");
        let r = overlay(&vars, &set).unwrap();
        assert_eq!(var.to_vec2::<f32>().unwrap(), vec![vec![1., 2.], vec![3., 4.], vec![9., 9.]]);
        assert_eq!(other.to_vec1::<f32>().unwrap(), vec![7., 7.]);
        assert_eq!(r.grown, vec![("w".to_string(), 1)]);
        assert_eq!(r.fresh, vec!["b".to_string()]);

        set.insert("b".into(), Tensor::new(&[1f32, 2., 3.], &dev).unwrap(), "x");
        let err = overlay(&vars, &set).unwrap_err().to_string();
        assert!(err.contains("b has shape [3]"), "{err}");
        let mut orphan = TensorSet::empty();
        orphan.insert("zz".into(), Tensor::new(&[1f32], &dev).unwrap(), "src.safetensors");
        let err = overlay(&vars, &orphan).unwrap_err().to_string();
        assert!(err.contains("src.safetensors") && err.contains("zz"), "{err}");
    }
}
