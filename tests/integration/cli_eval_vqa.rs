//! `blip2 eval vqa` on a 7-question VQAv2-format set over the hf-tiny images
//! (tests/fixtures/vqa-tiny): batched (left-padded OPT, right-padded T5) answers equal unbatched
//! ones, both equal transformers 4.57.6 answers (reference.json), the written results file
//! re-scored by `eval vqa-score` gives the printed numbers, and `caption` equals HF captions.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn eval_vqa(model: &str, batch: usize, out: &Path, extra: &[&str]) -> Output {
    eval_vqa_pattern(model, batch, out, "img{image_id}.png", extra)
}

fn eval_vqa_pattern(
    model: &str,
    batch: usize,
    out: &Path,
    pattern: &str,
    extra: &[&str],
) -> Output {
    let r = root();
    Command::new(env!("CARGO_BIN_EXE_blip2"))
        .args(["eval", "vqa", "--model"])
        .arg(r.join("tests/fixtures/hf-tiny").join(model))
        .arg("--questions")
        .arg(r.join("tests/fixtures/vqa-tiny/questions.json"))
        .arg("--annotations")
        .arg(r.join("tests/fixtures/vqa-tiny/annotations.json"))
        .arg("--images")
        .arg(r.join("tests/fixtures/hf-tiny/images"))
        .args(["--image-pattern", pattern, "--json"])
        .args(["--batch-size", &batch.to_string()])
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn check(model: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (one, three) = (tmp.path().join("b1.json"), tmp.path().join("b3.json"));
    let a = eval_vqa(model, 1, &one, &[]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let b = eval_vqa(model, 3, &three, &[]);
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let (r1, r3) = (read_json(&one), read_json(&three));
    let rows = r1.as_array().unwrap();
    assert_eq!(rows.len(), 7, "one result per question");
    assert_eq!(r1, r3, "{model}: batch 3 answers differ from batch 1");
    // Answers are post-processed (OPT strips) and questions come back in file order.
    for (k, row) in rows.iter().enumerate() {
        assert_eq!(row["question_id"], 100 + k as u64);
        let ans = row["answer"].as_str().unwrap();
        assert!(!ans.is_empty());
        if model == "opt" {
            assert_eq!(ans, ans.trim(), "OPT answers are stripped");
        }
    }
    // Scores printed by `eval vqa` = `eval vqa-score` on the written file.
    let printed: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    let r = root();
    let rescored = Command::new(env!("CARGO_BIN_EXE_blip2"))
        .args(["eval", "vqa-score", "--json", "--results"])
        .arg(&three)
        .arg("--questions")
        .arg(r.join("tests/fixtures/vqa-tiny/questions.json"))
        .arg("--annotations")
        .arg(r.join("tests/fixtures/vqa-tiny/annotations.json"))
        .output()
        .unwrap();
    assert!(rescored.status.success(), "{}", String::from_utf8_lossy(&rescored.stderr));
    let rescored: serde_json::Value = serde_json::from_slice(&rescored.stdout).unwrap();
    assert_eq!(printed, rescored, "{model}");
}

#[test]
fn opt_batched_left_padded_answers_equal_unbatched_and_rescore() {
    check("opt");
    // The fixture's annotations make some OPT answers right, so the score is not trivially 0.
    let tmp = tempfile::tempdir().unwrap();
    let out = eval_vqa("opt", 3, &tmp.path().join("r.json"), &[]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(s["overall"].as_f64().unwrap() > 0.0, "{s}");
}

#[test]
fn t5_batched_answers_equal_unbatched_and_rescore() {
    check("t5");
}

#[test]
fn prompt_without_slot_and_missing_images_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = eval_vqa("opt", 2, &tmp.path().join("r.json"), &["--prompt", "no slot"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no slot") && !err.contains("panicked"), "{err}");
    let out = eval_vqa_pattern("opt", 2, &tmp.path().join("r.json"), "x{image_id}.jpg", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("x0.jpg") && !err.contains("panicked"), "{err}");
}

/// tools/generate_reference.py: transformers 4.57.6 batched `generate` (batch 3, OPT left
/// padding) with the LAVIS zero-shot settings, LAVIS question cleaning and answer processing.
fn reference() -> serde_json::Value {
    read_json(&root().join("tests/fixtures/vqa-tiny/reference.json"))
}

#[test]
fn answers_equal_hf_reference_for_opt_and_t5() {
    let reference = reference();
    for model in ["opt", "t5"] {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("r.json");
        let out = eval_vqa(model, 3, &path, &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(read_json(&path), reference["vqa"][model], "{model}");
    }
}

#[test]
fn captions_equal_hf_reference_with_lavis_caption_settings() {
    let reference = reference();
    let r = root();
    for model in ["opt", "t5"] {
        let out = Command::new(env!("CARGO_BIN_EXE_blip2"))
            .args(["caption", "--model"])
            .arg(r.join("tests/fixtures/hf-tiny").join(model))
            .arg("--image")
            .args((0..4).map(|i| r.join(format!("tests/fixtures/hf-tiny/images/img{i}.png"))))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let got: Vec<String> =
            String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect();
        let want: Vec<String> = reference["captions"][model]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, want, "{model}");
    }
}
