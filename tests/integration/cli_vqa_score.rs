//! `blip2 eval vqa-score` end to end on the official-scorer fixture (numbers from salesforce-lavis 1.0.2
//! `vqa_eval.py`, tests/fixtures/vqa-official/expected.json).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vqa-official").join(name)
}

fn vqa_score(results: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blip2"))
        .args(["eval", "vqa-score", "--results"])
        .arg(results)
        .arg("--questions")
        .arg(fixture("questions.json"))
        .arg("--annotations")
        .arg(fixture("annotations.json"))
        .args(extra)
        .output()
        .expect("run blip2")
}

#[test]
fn json_output_matches_the_official_scorer() {
    let out = vqa_score(&fixture("results.json"), &["--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    assert_eq!(got["overall"], want["overall"]);
    assert_eq!(got["perAnswerType"], want["perAnswerType"]);
    assert_eq!(got.as_object().unwrap().len(), 2, "{got}");
}

#[test]
fn python_version_flag_selects_the_summation() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vqa-summation");
    for (flag, expected) in [("3.11", "expected_py311.json"), ("3.12", "expected_py312.json")] {
        let out = Command::new(env!("CARGO_BIN_EXE_blip2"))
            .args(["eval", "vqa-score", "--json", "--python", flag, "--results"])
            .arg(dir.join("results.json"))
            .arg("--questions")
            .arg(dir.join("questions.json"))
            .arg("--annotations")
            .arg(dir.join("annotations.json"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        let want: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(expected)).unwrap()).unwrap();
        assert_eq!(got["overall"], want["overall"], "--python {flag}");
    }
}

#[test]
fn table_output_lists_overall_and_answer_types() {
    let out = vqa_score(&fixture("results.json"), &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "overall         59.25",
        "yes/no         100.00",
        "number          48.57",
        "other           60.43",
    ] {
        let (name, value) = line.split_once(' ').unwrap();
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(name) && l.trim_end().ends_with(value.trim())),
            "{line:?} not in\n{text}"
        );
    }
}

#[test]
fn bad_results_fail_with_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (r#"[{"answer": "yes"}]"#, "[0].question_id: missing"),
        (
            r#"[{"question_id": 99999, "answer": "yes"}]"#,
            "[0].question_id 99999 is not a question of",
        ),
        (r#"[{"question_id": 1001, "answer": "yes"}]"#, "no answer for question_id 1002"),
        (r#"{"question_id": 1001}"#, "(top level): expected an array"),
        ("[{", "invalid JSON"),
    ];
    for (i, (content, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("results{i}.json"));
        std::fs::write(&path, content).unwrap();
        let out = vqa_score(&path, &["--json"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} succeeded");
        assert!(err.contains(want) && err.contains(&format!("results{i}.json")), "case {i}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = vqa_score(&dir.path().join("missing.json"), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.json"));
}
