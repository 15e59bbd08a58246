//! Reading LAVIS checkpoints (`.pth` with a `model` state dict, or LAVIS-named safetensors)
//! into canonical names.
//!
//! LAVIS saves only trainable parameters, so a stage-one `.pth` has no ViT: merge it with a
//! vision encoder from another source (an HF directory). Its `ln_vision` uses PyTorch's default
//! LayerNorm eps 1e-5 (HF's `post_layernorm` uses 1e-6), so a set holding LAVIS `ln_vision`
//! carries that eps.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::names::lavis_to_canonical;
use super::TensorSet;
use crate::error::{Error, Result};

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
}
