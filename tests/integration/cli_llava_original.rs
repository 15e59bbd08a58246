//! `blip2 generate` on original haotian-liu LLaVA directories vs LLaVA's own composition
//! (tools/llava_original_fixtures.py: `tokenizer_image_token`, the CLIP tower reloaded from
//! `mm_vision_tower`, `nn.Sequential` projector, `generate(inputs_embeds=...)`):
//! llava-tiny-original-linear (`linear` projector, `cls_patch`, the LLM in `pytorch_model.bin`
//! and the projector in `mm_projector.bin`) and llava-tiny-original-mlp3 (`mlp3x_gelu`,
//! `image_aspect_ratio = "pad"` on non-square images); the tower found in an HF hub cache; a
//! missing tower as one error line.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::cli_generate_llava::{dir, generate_json, ids, trim_after_eos};
use crate::common::stdout_json;

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn prompt_ids(v: &serde_json::Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

/// Every case of a variant's expected.json: prompt ids and the new ids per search.
fn check_variant(name: &str, searches: &[(&str, &str)]) {
    let d = dir(name);
    let exp = read_json(&d.join("expected.json"));
    let images = exp["images"].as_array().unwrap();
    let eos = exp["generation"]["eos_token_id"].as_u64().unwrap();
    let max_new = exp["generation"]["max_new_tokens"].as_u64().unwrap().to_string();
    let mut checked = 0;
    for case in exp["cases"].as_array().unwrap() {
        let image = d.join(images[case["image"].as_u64().unwrap() as usize].as_str().unwrap());
        let prompt = case["prompt_text"].as_str().unwrap();
        for (key, beams) in searches {
            let got = generate_json(&d, &image, prompt, beams, &max_new);
            assert_eq!(prompt_ids(&got["prompt_ids"]), prompt_ids(&case["prompt_ids"]), "{name}");
            let want = trim_after_eos(&ids(&case[*key]), eos);
            assert_eq!(ids(&got["ids"]), want, "{name} image {} {key}", case["image"]);
            checked += 1;
        }
    }
    assert!(checked >= 4, "{name}: only {checked} runs");
}

#[test]
fn original_linear_cls_patch_with_mm_projector_bin_matches_llava() {
    check_variant("llava-tiny-original-linear", &[("greedy_ids", "1")]);
}

#[test]
fn original_mlp3x_with_pad_aspect_matches_llava() {
    check_variant("llava-tiny-original-mlp3", &[("greedy_ids", "1"), ("beam3_ids", "3")]);
}

/// A model directory whose `mm_vision_tower` is `tower` (the other files copied from
/// llava-tiny-original).
fn model_with_tower(root: &Path, tower: &str) -> PathBuf {
    let src = dir("llava-tiny-original");
    let m = root.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), m.join(e.file_name())).unwrap();
    }
    let mut cfg = read_json(&m.join("config.json"));
    cfg["mm_vision_tower"] = tower.into();
    std::fs::write(m.join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
    m
}

fn generate_with_hf_home(model: &Path, hf_home: &Path) -> std::process::Output {
    let image = dir("llava-tiny").join("images/img0.png");
    Command::new(env!("CARGO_BIN_EXE_blip2"))
        .args(["generate", "--model"])
        .arg(model)
        .arg("--image")
        .arg(image)
        .args(["--prompt", "USER: <image>\nWhat color is the circle? ASSISTANT:"])
        .args(["--max-new-tokens", "6", "--json"])
        .env_remove("HF_HUB_CACHE")
        .env("HF_HOME", hf_home)
        .output()
        .expect("run blip2")
}

/// `mm_vision_tower = "ORG/NAME"` resolves to `$HF_HOME/hub/models--ORG--NAME/snapshots/*/`
/// (the one `refs/main` names) and gives llava-tiny's greedy ids.
#[test]
fn original_tower_is_found_in_the_hub_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_with_tower(tmp.path(), "tiny-org/clip-tiny");
    let repo = tmp.path().join("hf/hub/models--tiny-org--clip-tiny");
    let snap = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    for f in ["config.json", "model.safetensors", "preprocessor_config.json"] {
        std::fs::copy(dir("llava-tiny-clip").join(f), snap.join(f)).unwrap();
    }
    let got = stdout_json(&generate_with_hf_home(&model, &tmp.path().join("hf")));
    let exp = read_json(&dir("llava-tiny").join("expected.json"));
    let case = &exp["cases"][0];
    assert_eq!((case["image"].as_u64(), case["prompt"].as_u64()), (Some(0), Some(0)));
    assert_eq!(ids(&got["ids"]), trim_after_eos(&ids(&case["greedy_ids"]), 2));
}

/// A tower that is neither a directory nor in the cache: one error line naming it and both
/// places looked at.
#[test]
fn original_missing_tower_is_one_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_with_tower(tmp.path(), "no-org/no-tower");
    let out = generate_with_hf_home(&model, &tmp.path().join("hf"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    for want in ["vision tower \"no-org/no-tower\"", "mm_vision_tower", "models--no-org--no-tower"]
    {
        assert!(lines[0].contains(want), "{want}: {err}");
    }
    assert!(out.stdout.is_empty());
}
