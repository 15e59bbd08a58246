//! Strict checkpoint loading: a modified copy of the HF `itm/` fixture with a missing, a
//! misshaped, a wrongly typed and an extra tensor must be refused with all of them named.

use std::collections::HashMap;

use crate::common::fixture;
use candle_core::{DType, Device, Tensor};
use qformer::weights::{load_hf_dir, LoadOptions};

fn write_variant(edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("itm/config.json"), dir.path().join("config.json")).unwrap();
    let mut ts =
        candle_core::safetensors::load(fixture("itm/model.safetensors"), &Device::Cpu).unwrap();
    edit(&mut ts);
    candle_core::safetensors::save(&ts, dir.path().join("model.safetensors")).unwrap();
    dir
}

#[test]
fn refuses_missing_misshaped_mistyped_and_unexpected_tensors_naming_all() {
    let dir = write_variant(|ts| {
        ts.remove("qformer.encoder.layer.1.output_query.dense.bias").unwrap();
        ts.remove("vision_model.encoder.layers.0.mlp.fc2.weight").unwrap();
        ts.insert(
            "itm_head.weight".into(),
            Tensor::zeros((3, 48), DType::F32, &Device::Cpu).unwrap(),
        );
        ts.insert(
            "query_tokens".into(),
            Tensor::zeros((1, 4, 48), DType::I64, &Device::Cpu).unwrap(),
        );
        ts.insert(
            "qformer.pooler.dense.bias".into(),
            Tensor::zeros(48, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    for trainable in [false, true] {
        let err = load_hf_dir(dir.path(), &LoadOptions { trainable, ..Default::default() })
            .err()
            .expect("a broken checkpoint must be refused");
        let msg = err.to_string();
        for needle in [
            "qformer.encoder.layer.1.output_query.dense.bias",
            "vision_model.encoder.layers.0.mlp.fc2.weight",
            "itm_head.weight (expected [2, 48], found [3, 48])",
            "query_tokens (I64",
            "qformer.pooler.dense.bias",
            "missing 2",
            "unexpected 1",
        ] {
            assert!(msg.contains(needle), "error does not name {needle:?}: {msg}");
        }
        assert!(msg.contains("model.safetensors"), "error does not name the file: {msg}");
    }
}

#[test]
fn intact_copy_loads_and_sharded_index_is_followed() {
    let dir = write_variant(|_| {});
    load_hf_dir(dir.path(), &LoadOptions::default()).unwrap();

    // Same tensors split over two shards with an index, as large Hub checkpoints are.
    let sharded = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("itm/config.json"), sharded.path().join("config.json")).unwrap();
    let ts =
        candle_core::safetensors::load(fixture("itm/model.safetensors"), &Device::Cpu).unwrap();
    let (mut a, mut b) = (HashMap::new(), HashMap::new());
    let mut map = serde_json::Map::new();
    for (k, v) in ts {
        let shard = if k.starts_with("vision_model.") {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        map.insert(k.clone(), serde_json::Value::String(shard.into()));
        if k.starts_with("vision_model.") {
            a.insert(k, v)
        } else {
            b.insert(k, v)
        };
    }
    candle_core::safetensors::save(&a, sharded.path().join("model-00001-of-00002.safetensors"))
        .unwrap();
    candle_core::safetensors::save(&b, sharded.path().join("model-00002-of-00002.safetensors"))
        .unwrap();
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(sharded.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    let loaded = load_hf_dir(sharded.path(), &LoadOptions::default()).unwrap();
    assert_eq!(loaded.report.loaded, a.len() + b.len());
}

#[test]
fn bad_config_is_refused_with_its_path() {
    let dir = write_variant(|_| {});
    let cfg_path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["qformer_config"]["num_attention_heads"] = serde_json::json!(5);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let msg = load_hf_dir(dir.path(), &LoadOptions::default()).err().unwrap().to_string();
    assert!(msg.contains("config.json") && msg.contains("num_attention_heads (5)"), "{msg}");
}
