//! `blip2 pretrain` stage two through a frozen LLaMA, and `blip2 generate` from the run's model.
//!
//! The BLIP-2 + LLaMA directory is built here from in-tree fixtures: the ViT + Q-Former tensors
//! and config sections of hf-tiny/opt (its `language_model.*` dropped), the llava-tiny LLaMA
//! under `language_model.` (its text config as `text_config`, `model_type: "llama"`), a random
//! `language_projection` [64, 48] and llava-tiny's LLaMA-style tokenizer. (llama-tiny/mha has a
//! 100-id vocabulary, which the 494-id llava-tiny tokenizer does not fit; the llava-tiny LLaMA
//! does.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};

use super::cli_pretrain_stage2::{fixed_batch_config, metrics, ok, pretrain};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A `Blip2ForConditionalGeneration` directory with a LLaMA language model.
fn build_llama_blip2(dir: &Path) -> PathBuf {
    let out = dir.join("blip2-llama");
    std::fs::create_dir_all(out.join("qformer_tokenizer")).unwrap();
    let opt = fixtures().join("hf-tiny/opt");
    let llava = fixtures().join("llava-tiny");
    std::fs::copy(opt.join("preprocessor_config.json"), out.join("preprocessor_config.json"))
        .unwrap();
    std::fs::copy(
        opt.join("qformer_tokenizer/tokenizer.json"),
        out.join("qformer_tokenizer/tokenizer.json"),
    )
    .unwrap();
    std::fs::copy(llava.join("tokenizer.json"), out.join("tokenizer.json")).unwrap();

    let mut cfg = read_json(&opt.join("config.json"));
    let mut text = read_json(&llava.join("config.json"))["text_config"].clone();
    text["model_type"] = "llama".into();
    text["bos_token_id"] = 1.into();
    text["eos_token_id"] = 2.into();
    cfg["text_config"] = text;
    cfg.as_object_mut().unwrap().remove("image_token_index");
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();

    let dev = Device::Cpu;
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(opt.join("model.safetensors"), &dev)
            .unwrap()
            .into_iter()
            .filter(|(n, _)| {
                !n.starts_with("language_model.") && !n.starts_with("language_projection.")
            })
            .collect();
    for (name, t) in candle_core::safetensors::load(llava.join("model.safetensors"), &dev).unwrap()
    {
        if let Some(rest) = name.strip_prefix("model.language_model.") {
            tensors.insert(format!("language_model.model.{rest}"), t);
        } else if name == "lm_head.weight" {
            tensors.insert("language_model.lm_head.weight".into(), t);
        }
    }
    // A fixed pseudo-random projection [llama hidden 64, Q-Former hidden 48].
    let w: Vec<f32> = (0..64 * 48).map(|i| ((i * 7919 % 211) as f32 / 105.0 - 1.0) * 0.1).collect();
    tensors
        .insert("language_projection.weight".into(), Tensor::from_vec(w, (64, 48), &dev).unwrap());
    tensors.insert("language_projection.bias".into(), Tensor::zeros(64, DType::F32, &dev).unwrap());
    candle_core::safetensors::save(&tensors, out.join("model.safetensors")).unwrap();
    out
}

/// On one fixed batch of 8 synthetic samples, the caption loss through the frozen LLaMA falls by
/// a margin in six steps; the run's model directory generates.
#[test]
fn stage_two_trains_through_a_frozen_llama_and_its_model_generates() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = build_llama_blip2(dir.path());
    let cfg = fixed_batch_config(dir.path(), &model_dir);
    let run = dir.path().join("run");
    let out = pretrain(&["--config", cfg.to_str().unwrap(), "--out", run.to_str().unwrap()]);
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("frozen LLaMA"), "{stdout}");
    assert!(stdout.contains("language_projection continued"), "{stdout}");
    let lm: Vec<f64> =
        metrics(&run).iter().map(|r| r["losses"]["caption_lm"].as_f64().unwrap()).collect();
    assert_eq!(lm.len(), 6);
    assert!(lm.iter().all(|l| l.is_finite() && *l > 0.0), "{lm:?}");
    assert!(lm[5] < 0.985 * lm[0], "caption loss {lm:?}");

    let model = run.join("model");
    assert!(model.join("model.safetensors").is_file());
    let saved = read_json(&model.join("config.json"));
    assert_eq!(saved["text_config"]["model_type"], "llama");
    let image = fixtures().join("hf-tiny/images/img0.png");
    let out = Command::new(env!("CARGO_BIN_EXE_blip2"))
        .args(["generate", "--max-new-tokens", "3", "--json", "--model"])
        .arg(&model)
        .arg("--image")
        .arg(&image)
        .output()
        .unwrap();
    ok(&out);
    let generated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = generated["ids"].as_array().unwrap();
    assert!(!ids.is_empty(), "{generated}");
    assert!(ids.iter().all(|x| x.as_u64().is_some_and(|x| x < 494)), "{generated}");

    // The trained projection is what the model directory holds.
    let dev = Device::Cpu;
    let saved = candle_core::safetensors::load(model.join("model.safetensors"), &dev).unwrap();
    let ckpt =
        candle_core::safetensors::load(run.join("checkpoints/step-000006/model.safetensors"), &dev)
            .unwrap();
    let w = "language_projection.weight";
    let d = (&saved[w] - &ckpt[w]).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
    assert!(saved.keys().any(|n| n.starts_with("language_model.model.layers.")));
}

/// A caption row that does not start with the LLaMA's BOS is refused by the loss: the run fails
/// by name when the tokenizer's post-processor adds no `<s>`.
#[test]
fn stage_two_llama_needs_the_tokenizer_bos() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = build_llama_blip2(dir.path());
    let tok = model_dir.join("tokenizer.json");
    let mut t = read_json(&tok);
    t["post_processor"] = serde_json::Value::Null;
    std::fs::write(&tok, serde_json::to_string(&t).unwrap()).unwrap();
    let cfg = fixed_batch_config(dir.path(), &model_dir);
    let run = dir.path().join("run");
    let out = pretrain(&["--config", cfg.to_str().unwrap(), "--out", run.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BOS"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
