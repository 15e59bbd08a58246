//! `blip2 generate` from image files vs transformers 4.57.6 `Blip2ForConditionalGeneration.generate`
//! (hf-tiny/opt and hf-tiny/t5 `expected.json`: 6 new tokens, greedy and 3 beams).

use std::path::PathBuf;
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny").join(name)
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

/// HF rows are padded after EOS to the batch width; ours end at EOS.
fn trim_after_eos(row: &[u64], eos: u64, from: usize) -> Vec<u64> {
    match row.iter().enumerate().skip(from).find(|(_, &t)| t == eos) {
        Some((i, _)) => row[..=i].to_vec(),
        None => row.to_vec(),
    }
}

fn check_model(name: &str, min_new_tokens: usize, eos: u64, skip: usize) {
    let dir = fixture(name);
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let prompts = expected["prompts"].as_array().unwrap();
    let images = expected["images"].as_array().unwrap();
    let mut checked = 0;
    for case in expected["cases"].as_array().unwrap() {
        let image =
            fixture("").join(images[case["image"].as_u64().unwrap() as usize].as_str().unwrap());
        let prompt = prompts[case["prompt"].as_u64().unwrap() as usize].as_str().unwrap();
        for (key, beams) in [("greedy_ids", "1"), ("beam3_ids", "3")] {
            let out = Command::new(env!("CARGO_BIN_EXE_blip2"))
                .args(["generate", "--model"])
                .arg(&dir)
                .arg("--image")
                .arg(&image)
                .args(["--prompt", prompt, "--max-new-tokens", "6", "--num-beams", beams])
                .args(["--min-new-tokens", &min_new_tokens.to_string(), "--json"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let want = trim_after_eos(&ids(&case[key]), eos, skip);
            assert_eq!(ids(&got["ids"]), want, "{name} {key} {} / {prompt}", image.display());
            if key == "greedy_ids" {
                if let Some(text) = case.get("greedy_text") {
                    assert_eq!(got["text"], *text, "{name} greedy text");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 16, "{name}: every image x prompt x decoding");
}

#[test]
fn opt_generate_from_image_files_matches_hf() {
    check_model("opt", 1, 2, 0);
}

#[test]
fn t5_generate_from_image_files_matches_hf() {
    // T5 rows start with the decoder start token (0, also T5's pad).
    check_model("t5", 0, 1, 1);
}

#[test]
fn generate_names_a_missing_image() {
    let out = Command::new(env!("CARGO_BIN_EXE_blip2"))
        .args(["generate", "--model"])
        .arg(fixture("opt"))
        .args(["--image", "/nonexistent/x.png", "--prompt", "a photo of"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/x.png") && !err.contains("panicked"), "{err}");
}
