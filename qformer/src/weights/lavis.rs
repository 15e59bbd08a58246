//! Reading LAVIS checkpoints (`.pth` with a `model` state dict, or LAVIS-named safetensors)
//! into canonical names.
//!
//! LAVIS saves only trainable parameters, so a stage-one `.pth` has no ViT: merge it with a
//! vision encoder from another source (an HF directory). Its `ln_vision` uses PyTorch's default
//! LayerNorm eps 1e-5 (HF's `post_layernorm` uses 1e-6), so a set holding LAVIS `ln_vision`
//! carries that eps.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::names::{canonical_to_lavis, lavis_to_canonical};
use super::pth::write_pth;
use super::TensorSet;
use crate::config::Blip2Config;
use crate::error::{Error, Result};
use crate::model::DEFAULT_TEMP;

/// `ln_vision` eps in LAVIS (`nn.LayerNorm` default).
pub const LAVIS_LN_VISION_EPS: f64 = 1e-5;

/// Converts LAVIS-named tensors. Names outside the table are kept verbatim so that a strict
/// load reports them as unexpected.
pub fn from_lavis_tensors(
    tensors: Vec<(String, Tensor)>,
    source: &str,
    device: &Device,
) -> Result<TensorSet> {
    let mut raw: BTreeMap<String, Tensor> = tensors.into_iter().collect();
    let mut set = TensorSet::empty();
    // EVA blocks keep q_bias/v_bias apart and have no k bias; HF fuses them into one qkv.bias.
    let q_bias_names: Vec<String> =
        raw.keys().filter(|k| k.ends_with(".attn.q_bias")).cloned().collect();
    for qn in q_bias_names {
        let block = qn.trim_end_matches(".q_bias");
        let vn = format!("{block}.v_bias");
        let q = raw.remove(&qn).ok_or_else(|| Error::Msg(format!("{source}: {qn} vanished")))?;
        let v = raw.remove(&vn).ok_or_else(|| Error::Checkpoint {
            source_name: source.into(),
            report: format!("{qn} present but {vn} missing"),
        })?;
        let fused = Tensor::cat(&[&q, &q.zeros_like()?, &v], 0)?;
        let canonical = lavis_to_canonical(&format!("{block}.qkv.bias")).ok_or_else(|| {
            Error::Msg(format!("{source}: no canonical name for {block}.qkv.bias"))
        })?;
        set.insert(canonical, fused.to_device(device)?, source);
    }
    for (name, t) in raw {
        let why = match name.as_str() {
            "Qformer.bert.embeddings.position_ids" => Some("buffer (arange), not a parameter"),
            "Qformer.cls.predictions.decoder.weight" => {
                Some("tied to Qformer.bert.embeddings.word_embeddings.weight")
            }
            "Qformer.cls.predictions.decoder.bias" => {
                Some("same tensor as Qformer.cls.predictions.bias")
            }
            _ => None,
        };
        if let Some(why) = why {
            set.ignore(name, why);
            continue;
        }
        match lavis_to_canonical(&name) {
            Some(c) => set.insert(c, t.to_device(device)?, source),
            None => set.insert(name, t.to_device(device)?, source),
        }
    }
    if set.contains("vision_model.post_layernorm.weight") {
        set.set_ln_vision_eps(LAVIS_LN_VISION_EPS);
    }
    Ok(set)
}

/// A LAVIS `.pth` checkpoint (`{"model": state_dict, ...}`, as `runner_base._save_checkpoint` writes).
pub fn read_lavis_pth(path: impl AsRef<Path>, device: &Device) -> Result<TensorSet> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let tensors = candle_core::pickle::read_all_with_key(path, Some("model")).map_err(|e| {
        Error::Msg(format!("{}: cannot read LAVIS checkpoint: {e}", path.display()))
    })?;
    from_lavis_tensors(tensors, &path.display().to_string(), device)
}

/// The buffer LAVIS's BERT embeddings register (`arange(max_position_embeddings)`), which its
/// state dicts carry beside the parameters.
const POSITION_IDS: &str = "Qformer.bert.embeddings.position_ids";

/// LAVIS's name for HF's `language_projection.` prefix, by LLM family (`text_config.model_type`).
fn lavis_projection_prefix(cfg: &Blip2Config) -> Result<&'static str> {
    let model_type = cfg
        .text_config
        .as_ref()
        .and_then(|t| t.get("model_type"))
        .and_then(|m| m.as_str())
        .unwrap_or("");
    match model_type {
        "opt" => Ok("opt_proj."),
        "t5" => Ok("t5_proj."),
        other => Err(Error::Msg(format!(
            "language_projection has no LAVIS name for text_config.model_type {other:?} (known: opt, t5)"
        ))),
    }
}

/// Renames LAVIS's stage-two `opt_proj.*` / `t5_proj.*` (which [`from_lavis_tensors`] keeps
/// verbatim) to HF's `language_projection.*`.
pub fn lavis_projection_to_hf(set: TensorSet) -> TensorSet {
    let mut out = TensorSet::empty();
    out.ignored = set.ignored.clone();
    out.ln_vision_eps = set.ln_vision_eps;
    for name in set.names() {
        let renamed = ["opt_proj.", "t5_proj."]
            .iter()
            .find_map(|p| name.strip_prefix(p))
            .map(|rest| format!("language_projection.{rest}"));
        let t = set.get(name).expect("listed name").clone();
        let src = set.origin.get(name).cloned().unwrap_or_default();
        out.insert(renamed.unwrap_or_else(|| name.to_string()), t, &src);
    }
    out
}

/// The state dict LAVIS saves for the model in `set` (`runner_base._save_checkpoint` keeps all
/// but the frozen parameters): LAVIS names, without the frozen ViT and LLM, with what
/// `Blip2Qformer.state_dict()` adds: the `position_ids` buffer and the LM head decoder tied to
/// the word embeddings (the same tensor, so it is stored once). `temp` is 0.07 when `set` has
/// the stage-one heads but no `temp`, as the loader defaults it.
pub fn to_lavis_state_dict(cfg: &Blip2Config, set: &TensorSet) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    for name in set.names() {
        let frozen_vit =
            name.starts_with("vision_model.") && !name.starts_with("vision_model.post_layernorm.");
        if frozen_vit || name.starts_with("language_model.") {
            continue;
        }
        let t = set.get(name).expect("listed name").clone();
        let lavis = match name.strip_prefix("language_projection.") {
            Some(rest) => format!("{}{rest}", lavis_projection_prefix(cfg)?),
            None => canonical_to_lavis(name).ok_or_else(|| {
                Error::Msg(format!("tensor {name} has no LAVIS name (from {})", set.source_names()))
            })?,
        };
        out.push((lavis, t));
    }
    let device = set.get("query_tokens").map(|t| t.device().clone()).unwrap_or(Device::Cpu);
    if set.contains("itm_head.weight") && !set.contains("temp") {
        out.push(("temp".into(), Tensor::new(DEFAULT_TEMP as f32, &device)?));
    }
    if let (Some(words), Some(bias)) =
        (set.get("embeddings.word_embeddings.weight"), set.get("cls.predictions.bias"))
    {
        out.push(("Qformer.cls.predictions.decoder.weight".into(), words.clone()));
        out.push(("Qformer.cls.predictions.decoder.bias".into(), bias.clone()));
    }
    let n = cfg.qformer_config.max_position_embeddings;
    let ids = Tensor::arange(0i64, n as i64, &device)?.reshape((1, n))?;
    out.push((POSITION_IDS.into(), ids.to_dtype(DType::I64)?));
    Ok(out)
}

/// Writes the model in `set` as a LAVIS checkpoint (`{"model": state_dict}`, see
/// [`to_lavis_state_dict`]) that `torch.load` and [`read_lavis_pth`] read; returns how many
/// tensors it holds.
pub fn write_lavis_pth(
    path: impl AsRef<Path>,
    cfg: &Blip2Config,
    set: &TensorSet,
) -> Result<usize> {
    let state_dict = to_lavis_state_dict(cfg, set)?;
    write_pth(path.as_ref(), &state_dict, Some("model"))?;
    Ok(state_dict.len())
}

/// A safetensors file with LAVIS names (e.g. a saved `Qformer.cls.predictions.*` LM head).
pub fn read_lavis_safetensors(path: impl AsRef<Path>, device: &Device) -> Result<TensorSet> {
    let path = path.as_ref();
    let tensors = candle_core::safetensors::load(path, device)
        .map_err(|e| Error::Msg(format!("{}: cannot read safetensors: {e}", path.display())))?;
    from_lavis_tensors(tensors.into_iter().collect(), &path.display().to_string(), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eva_q_v_biases_become_hf_fused_qkv_bias_and_aliases_are_dropped() {
        let dev = Device::Cpu;
        let q = Tensor::new(&[1f32, 2.], &dev).unwrap();
        let v = Tensor::new(&[5f32, 6.], &dev).unwrap();
        let tensors = vec![
            ("visual_encoder.blocks.3.attn.q_bias".to_string(), q),
            ("visual_encoder.blocks.3.attn.v_bias".to_string(), v),
            (
                "Qformer.cls.predictions.decoder.bias".to_string(),
                Tensor::zeros(2, candle_core::DType::F32, &dev).unwrap(),
            ),
            (
                "opt_proj.weight".to_string(),
                Tensor::zeros(2, candle_core::DType::F32, &dev).unwrap(),
            ),
        ];
        let set = from_lavis_tensors(tensors, "test.pth", &dev).unwrap();
        let fused = set.get("vision_model.encoder.layers.3.self_attn.qkv.bias").unwrap();
        assert_eq!(fused.to_vec1::<f32>().unwrap(), vec![1., 2., 0., 0., 5., 6.]);
        // Unknown LAVIS names stay verbatim, so a strict load reports them.
        assert!(set.contains("opt_proj.weight"));
        assert_eq!(set.len(), 2);
        assert_eq!(set.ln_vision_eps(), None);

        let lone = vec![(
            "visual_encoder.blocks.0.attn.q_bias".to_string(),
            Tensor::new(&[1f32], &dev).unwrap(),
        )];
        let err = from_lavis_tensors(lone, "test.pth", &dev).unwrap_err().to_string();
        assert!(err.contains("visual_encoder.blocks.0.attn.v_bias"), "{err}");
    }

    fn fixture(rel: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf-tiny").join(rel)
    }

    fn bytes(t: &Tensor) -> Vec<u8> {
        let mut b = Vec::new();
        t.write_bytes(&mut b).unwrap();
        b
    }

    /// Reading the LAVIS fixture and writing it back gives the state dict LAVIS saved: every
    /// name (tied decoder aliases and the `position_ids` buffer included), shape, dtype and value.
    #[test]
    fn the_lavis_fixture_is_written_back_as_it_was_saved() {
        let dev = Device::Cpu;
        let pth = fixture("itm/lavis_stage1.pth");
        let cfg = Blip2Config::from_file(fixture("itm/config.json")).unwrap();
        let original: BTreeMap<String, Tensor> =
            candle_core::pickle::read_all_with_key(&pth, Some("model"))
                .unwrap()
                .into_iter()
                .collect();
        let set = read_lavis_pth(&pth, &dev).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("back.pth");
        let n = write_lavis_pth(&out, &cfg, &set).unwrap();
        let back: BTreeMap<String, Tensor> =
            candle_core::pickle::read_all_with_key(&out, Some("model"))
                .unwrap()
                .into_iter()
                .collect();
        assert_eq!(n, back.len());
        assert_eq!(
            back.keys().collect::<Vec<_>>(),
            original.keys().collect::<Vec<_>>(),
            "same LAVIS names"
        );
        for (name, t) in &original {
            let b = &back[name];
            assert_eq!((b.dims(), b.dtype()), (t.dims(), t.dtype()), "{name}");
            assert_eq!(bytes(b), bytes(t), "{name}");
        }
    }

    #[test]
    fn the_frozen_vit_and_llm_stay_out_and_the_projection_takes_the_llm_family_name() {
        let dev = Device::Cpu;
        let t = || Tensor::zeros(2, DType::F32, &dev).unwrap();
        let mut set = TensorSet::empty();
        for name in [
            "vision_model.encoder.layers.0.mlp.fc1.bias",
            "vision_model.post_layernorm.bias",
            "language_model.lm_head.weight",
            "language_projection.bias",
            "query_tokens",
        ] {
            set.insert(name.into(), t(), "test");
        }
        let mut cfg = Blip2Config {
            text_config: Some(serde_json::json!({"model_type": "t5"})),
            ..Default::default()
        };
        let names: Vec<String> =
            to_lavis_state_dict(&cfg, &set).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["t5_proj.bias", "query_tokens", "ln_vision.bias", POSITION_IDS]);

        // And back: LAVIS's projection name becomes HF's again.
        let lavis: Vec<(String, Tensor)> = vec![("t5_proj.bias".into(), t())];
        let back = lavis_projection_to_hf(from_lavis_tensors(lavis, "x.pth", &dev).unwrap());
        assert!(back.contains("language_projection.bias"));

        cfg.text_config = Some(serde_json::json!({"model_type": "llama"}));
        let err = to_lavis_state_dict(&cfg, &set).unwrap_err().to_string();
        assert!(err.contains("language_projection") && err.contains("llama"), "{err}");

        set.insert("mystery.weight".into(), t(), "odd.safetensors");
        cfg.text_config = Some(serde_json::json!({"model_type": "opt"}));
        let err = to_lavis_state_dict(&cfg, &set).unwrap_err().to_string();
        assert!(err.contains("mystery.weight") && err.contains("odd.safetensors"), "{err}");
    }
}
