//! Shared loading for the LLM parity tests (tiny checkpoints and reference outputs recorded with
//! HF transformers 4.57.6, bridge inputs from tools/llm_bridge_fixture.py).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use qformer::llm::{Blip2Llm, Blip2LlmConfig, GenerationConfig};

pub use crate::common::test_device;

pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf-tiny").join(name)
}

pub struct Fixture {
    pub model: Blip2Llm,
    pub config: Blip2LlmConfig,
    pub expected: serde_json::Value,
    pub expected_tensors: HashMap<String, Tensor>,
    pub bridge: serde_json::Value,
    pub bridge_tensors: HashMap<String, Tensor>,
}

pub fn load(name: &str, dtype: DType) -> Fixture {
    let dir = fixture_dir(name);
    let dev = test_device();
    let config = Blip2LlmConfig::from_json_file(&dir.join("config.json")).expect("config");
    let weights =
        candle_core::safetensors::load(dir.join("model.safetensors"), &dev).expect("weights");
    let vb = VarBuilder::from_tensors(weights, dtype, &dev);
    let model = Blip2Llm::load(vb, &config).expect("model");
    let read_json = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(f)).expect(f)).expect(f)
    };
    Fixture {
        model,
        config,
        expected: read_json("expected.json"),
        expected_tensors: candle_core::safetensors::load(dir.join("expected.safetensors"), &dev)
            .unwrap(),
        bridge: read_json("bridge.json"),
        bridge_tensors: candle_core::safetensors::load(dir.join("bridge.safetensors"), &dev)
            .unwrap(),
    }
}

impl Fixture {
    /// Q-Former output of image `i`: [1, Q, Hq]
    pub fn query_output(&self, i: usize, dtype: DType) -> Tensor {
        self.bridge_tensors["query_output"]
            .get(i)
            .unwrap()
            .unsqueeze(0)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// Q-Former outputs of several images: [B, Q, Hq]
    pub fn query_outputs(&self, images: &[usize]) -> Tensor {
        let idx = Tensor::from_vec(
            images.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            images.len(),
            self.bridge_tensors["query_output"].device(),
        )
        .unwrap();
        self.bridge_tensors["query_output"].index_select(&idx, 0).unwrap()
    }
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

pub fn id_rows(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array().expect("rows").iter().map(ids).collect()
}

/// Compared on the CPU, whatever device made them.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let on_cpu = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_device(&Device::Cpu).unwrap();
    (on_cpu(a) - on_cpu(b))
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// HF returns fixed-width rows (padded after EOS); ours are unpadded: cut HF's row after its
/// first EOS at or after `from`.
pub fn trim_after_eos(row: &[u32], eos: &[u32], from: usize) -> Vec<u32> {
    match row.iter().enumerate().skip(from).find(|(_, t)| eos.contains(t)) {
        Some((i, _)) => row[..=i].to_vec(),
        None => row.to_vec(),
    }
}

/// `GenerationConfig` from the settings dict recorded in bridge.json.
pub fn gen_config(settings: &serde_json::Value, eos: u32, pad: u32) -> GenerationConfig {
    let f = |k: &str, d: f64| settings.get(k).and_then(|v| v.as_f64()).unwrap_or(d);
    GenerationConfig {
        max_new_tokens: f("max_new_tokens", 20.0) as usize,
        min_new_tokens: f("min_new_tokens", 0.0) as usize,
        num_beams: f("num_beams", 1.0) as usize,
        length_penalty: f("length_penalty", 1.0),
        repetition_penalty: f("repetition_penalty", 1.0),
        eos_token_ids: vec![settings
            .get("eos_token_id")
            .and_then(|v| v.as_u64())
            .map(|v| v as u32)
            .unwrap_or(eos)],
        pad_token_id: pad,
        stop_sequences: Vec::new(),
    }
}
