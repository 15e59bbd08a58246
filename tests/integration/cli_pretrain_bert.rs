//! `blip2 pretrain` with the Q-Former started from BERT (`model.bert`, LAVIS `init_Qformer`) on
//! the tiny preset, whose built-in model config has the shape of `tests/fixtures/bert-tiny`
//! (made by `tools/make_tiny_bert.py`), and the tiny preset with no other flag.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};

fn fixture(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(sub)
}

fn pretrain(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_blip2"))
        .arg("pretrain")
        .args(args)
        .output()
        .expect("running blip2")
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

/// Two steps at a learning rate of 1e-6 from BERT (and the ViT + ln_vision of an HF BLIP-2
/// directory): every copied tensor of the saved checkpoint is within a few AdamW steps
/// (|update| <~ lr each) of its BERT source, per `expected.json`.
#[test]
fn two_steps_from_bert_keep_the_copied_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let bert = fixture("bert-tiny");
    // The hf-tiny BLIP-2 directory has the tiny preset's ViT: frozen ViT + ln_vision from it.
    let vision = fixture("hf-tiny/itm");
    let out = pretrain(&args(&[
        "--config",
        "tiny",
        "--out",
        run.to_str().unwrap(),
        "--set",
        &format!("model.bert={}", bert.display()),
        "--set",
        "steps.max_steps=2",
        "--set",
        "schedule.warmup_steps=1",
        "--set",
        "optimizer.lr=1e-6",
        "--set",
        "schedule.warmup_lr=0",
        "--set",
        "schedule.min_lr=0",
        "--set",
        "data.synthetic=48",
        "--set",
        &format!("model.vision_weights={}", vision.display()),
    ]));
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Q-Former from BERT"), "{stdout}");
    assert!(stdout.contains("ln_vision from it too"), "{stdout}");

    let dev = Device::Cpu;
    let ckpt: HashMap<String, Tensor> =
        candle_core::safetensors::load(run.join("checkpoints/step-000002/model.safetensors"), &dev)
            .unwrap();
    let src = candle_core::safetensors::load(bert.join("model.safetensors"), &dev).unwrap();
    let exp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bert.join("expected.json")).unwrap())
            .unwrap();
    let bert_v = exp["bert_vocab_size"].as_u64().unwrap() as usize;
    let copied = exp["copied"].as_object().unwrap();
    assert_eq!(copied.len(), 53);
    for (lavis, from) in copied {
        let name = qformer::weights::names::lavis_to_canonical(lavis).unwrap();
        let got = ckpt.get(&name).unwrap_or_else(|| panic!("checkpoint lacks {name}"));
        let want = &src[from.as_str().unwrap()];
        let got = if got.dim(0).unwrap() == bert_v + 1 {
            got.narrow(0, 0, bert_v).unwrap()
        } else {
            got.clone()
        };
        let d = max_abs_diff(&got, want);
        // A fresh value instead of the copy would be off by ~0.02 to ~0.2.
        assert!(d < 1e-4, "{name} vs BERT {from}: {d}");
    }
    assert_eq!(ckpt["embeddings.word_embeddings.weight"].dims(), &[bert_v + 1, 32]);
    assert_eq!(ckpt["cls.predictions.bias"].dims(), &[bert_v + 1]);
    let hf = candle_core::safetensors::load(vision.join("model.safetensors"), &dev).unwrap();
    for n in ["vision_model.post_layernorm.weight", "vision_model.post_layernorm.bias"] {
        let d = max_abs_diff(&ckpt[n], &hf[n]);
        assert!(d < 1e-4, "{n} (ln_vision) vs {}: {d}", vision.display());
    }
    // The run's config records where the Q-Former came from.
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(cfg.contains("bert = "), "{cfg}");
}

#[test]
fn a_bert_of_another_shape_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    // A BLIP-2 config.json is no BERT config: bert-base defaults (hidden 768) apply.
    let out = pretrain(&args(&[
        "--config",
        "tiny",
        "--out",
        dir.path().to_str().unwrap(),
        "--set",
        &format!("model.bert={}", fixture("hf-tiny/itm").display()),
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model.bert") && err.contains("hidden_size is 768"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn tiny_preset_runs_with_no_other_flag() {
    let dir = tempfile::tempdir().unwrap();
    let run: &Path = dir.path();
    ok(&pretrain(&args(&["--config", "tiny", "--out", run.to_str().unwrap()])));
    // The tiny preset: 8 steps, checkpoints every 4 (keep_last 2).
    assert!(run.join("checkpoints/step-000008/model.safetensors").is_file());
    assert!(run.join("tokenizer.json").is_file());
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 8);
}
