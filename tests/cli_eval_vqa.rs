//! `blip2 eval vqa` on a 7-question VQAv2-format set over the hf-tiny images
//! (tests/fixtures/vqa-tiny): batched (left-padded OPT, right-padded T5) answers equal unbatched
//! ones, and the written results file re-scored by `eval vqa-score` gives the printed numbers.

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
    assert!(
        rescored.status.success(),
        "{}",
        String::from_utf8_lossy(&rescored.stderr)
    );
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
    let out = eval_vqa(
        "opt",
        2,
        &tmp.path().join("r.json"),
        &["--prompt", "no slot"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no slot") && !err.contains("panicked"),
        "{err}"
    );
    let out = eval_vqa_pattern("opt", 2, &tmp.path().join("r.json"), "x{image_id}.jpg", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("x0.jpg") && !err.contains("panicked"), "{err}");
}
