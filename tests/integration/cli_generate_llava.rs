//! `blip2 generate` on an HF `LlavaForConditionalGeneration` directory vs transformers 4.57.6
//! (`LlavaProcessor` + `generate`) on tests/fixtures/llava-tiny, llava-tiny-oldnames (same
//! weights, older Hub tensor names) and llava-tiny-original (same weights in the original
//! haotian-liu layout, the tower in llava-tiny-clip), all checked against llava-tiny's
//! `expected.*`: the processor's expanded `input_ids` (original: `tokenizer_image_token`'s ids),
//! greedy and 3-beam ids (6 new tokens), and the `<image>` count error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::common::{blip2, load_tensors, stdout_json};

pub(crate) fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub(crate) fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

/// HF rows may be padded after EOS; ours end at EOS.
pub(crate) fn trim_after_eos(row: &[u64], eos: u64) -> Vec<u64> {
    match row.iter().position(|&t| t == eos) {
        Some(i) => row[..=i].to_vec(),
        None => row.to_vec(),
    }
}

fn row(t: &Tensor) -> Vec<u64> {
    t.to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as u64)
        .collect()
}

/// `generate --json` of `model` on one image and prompt with `beams` beams.
pub(crate) fn generate_json(
    model: &Path,
    image: &Path,
    prompt: &str,
    beams: &str,
    max_new: &str,
) -> serde_json::Value {
    stdout_json(&blip2([
        "generate".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--image".as_ref(),
        image.as_os_str(),
        "--prompt".as_ref(),
        prompt.as_ref(),
        "--max-new-tokens".as_ref(),
        max_new.as_ref(),
        "--num-beams".as_ref(),
        beams.as_ref(),
        "--json".as_ref(),
    ] as [&std::ffi::OsStr; 12]))
}

/// llava-tiny's `expected.json` and `expected.safetensors` (HF's outputs).
fn expected() -> (serde_json::Value, HashMap<String, Tensor>) {
    let exp_dir = dir("llava-tiny");
    let json =
        serde_json::from_str(&std::fs::read_to_string(exp_dir.join("expected.json")).unwrap())
            .unwrap();
    (json, load_tensors(&exp_dir.join("expected.safetensors")))
}

fn check_dir(name: &str) {
    let exp_dir = dir("llava-tiny");
    let (expected, tensors) = expected();
    let images = expected["images"].as_array().unwrap();
    let eos = expected["generation"]["eos_token_id"].as_u64().unwrap();
    let max_new = expected["generation"]["max_new_tokens"].as_u64().unwrap().to_string();
    let mut checked = 0;
    for case in expected["cases"].as_array().unwrap() {
        let (i, j) = (case["image"].as_u64().unwrap(), case["prompt"].as_u64().unwrap());
        let image = exp_dir.join(images[i as usize].as_str().unwrap());
        let prompt = case["prompt_text"].as_str().unwrap();
        let want_input = row(&tensors[&format!("input_ids_{i}_{j}")]);
        for (key, beams) in [("greedy_ids", "1"), ("beam3_ids", "3")] {
            let got = generate_json(&dir(name), &image, prompt, beams, &max_new);
            if got.get("prompt_ids").is_some() {
                // Original LLaVA marks each image once, with -200.
                let image = expected["image_token_index"].as_i64().unwrap();
                let want: Vec<i64> = ids(&case["prompt_ids"])
                    .iter()
                    .map(|&t| if t as i64 == image { -200 } else { t as i64 })
                    .collect();
                let got_ids: Vec<i64> = got["prompt_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_i64().unwrap())
                    .collect();
                assert_eq!(got_ids, want, "{name} case {i}/{j}: prompt_ids");
            } else {
                assert_eq!(ids(&got["input_ids"]), want_input, "{name} case {i}/{j}: input_ids");
            }
            let want = trim_after_eos(&ids(&case[key]), eos);
            assert_eq!(ids(&got["ids"]), want, "{name} case {i}/{j}: {key}");
            checked += 1;
        }
    }
    assert!(checked >= 4, "{name}: only {checked} runs");
}

#[test]
fn llava_generate_from_image_files_matches_hf() {
    check_dir("llava-tiny");
}

#[test]
fn llava_generate_oldnames_matches_hf() {
    check_dir("llava-tiny-oldnames");
}

#[test]
fn llava_generate_original_layout_matches_hf() {
    check_dir("llava-tiny-original");
}

#[test]
fn llava_generate_prints_text_without_json() {
    let d = dir("llava-tiny");
    let out = blip2([
        "generate".as_ref(),
        "--model".as_ref(),
        d.as_os_str(),
        "--image".as_ref(),
        d.join("images/img0.png").as_os_str(),
        "--prompt".as_ref(),
        "USER: <image>\nWhat color is the circle? ASSISTANT:".as_ref(),
        "--max-new-tokens".as_ref(),
        "6".as_ref(),
    ] as [&std::ffi::OsStr; 9]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HuGBk\u{7}Hu\n");
}

#[test]
fn llava_image_marker_count_mismatch_is_one_error_line() {
    let d = dir("llava-tiny");
    let img = d.join("images/img0.png");
    let prompt = "USER: <image>\nWhat color is the circle? ASSISTANT:";
    let cases: [(Vec<&std::ffi::OsStr>, &str, &str); 2] = [
        (vec![img.as_os_str(), img.as_os_str()], prompt, "1 <image> marker(s) but 2 --image"),
        (
            vec![img.as_os_str()],
            "USER: <image><image> hi ASSISTANT:",
            "2 <image> marker(s) but 1 --image",
        ),
    ];
    let original = dir("llava-tiny-original");
    for ((images, prompt, want), model) in cases.iter().flat_map(|c| [(c, &d), (c, &original)]) {
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["generate".as_ref(), "--model".as_ref(), model.as_os_str()];
        for im in images {
            args.push("--image".as_ref());
            args.push(im);
        }
        let prompt: &str = prompt;
        args.extend(
            ["--prompt".as_ref(), prompt.as_ref(), "--json".as_ref()] as [&std::ffi::OsStr; 3]
        );
        let out = blip2(args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].starts_with("error:") && lines[0].contains(*want), "{err}");
        assert!(out.stdout.is_empty());
    }
}

/// `--question Q` fills LLaVA-1.5's template: the same input ids and tokens as the fixture's
/// `--prompt "USER: <image>\nQ ASSISTANT:"` cases; `--question` beside `--prompt` is refused.
#[test]
fn llava_generate_question_fills_the_llava_template() {
    let exp_dir = dir("llava-tiny");
    let (expected, tensors) = expected();
    let images = expected["images"].as_array().unwrap();
    let eos = expected["generation"]["eos_token_id"].as_u64().unwrap();
    let questions = expected["questions"].as_array().expect("questions");
    let max_new = expected["generation"]["max_new_tokens"].as_u64().unwrap().to_string();
    let mut checked = 0;
    for case in expected["cases"].as_array().unwrap() {
        let (i, j) = (case["image"].as_u64().unwrap(), case["prompt"].as_u64().unwrap());
        let image = exp_dir.join(images[i as usize].as_str().unwrap());
        let question = questions[j as usize].as_str().unwrap();
        let out = blip2([
            "generate".as_ref(),
            "--model".as_ref(),
            exp_dir.as_os_str(),
            "--image".as_ref(),
            image.as_os_str(),
            "--question".as_ref(),
            question.as_ref(),
            "--max-new-tokens".as_ref(),
            max_new.as_ref(),
            "--json".as_ref(),
        ] as [&std::ffi::OsStr; 10]);
        let got = stdout_json(&out);
        assert_eq!(ids(&got["input_ids"]), row(&tensors[&format!("input_ids_{i}_{j}")]));
        assert_eq!(ids(&got["ids"]), trim_after_eos(&ids(&case["greedy_ids"]), eos));
        checked += 1;
    }
    assert!(checked >= 2);
    let out = blip2([
        "generate".as_ref(),
        "--model".as_ref(),
        exp_dir.as_os_str(),
        "--image".as_ref(),
        exp_dir.join("images/img0.png").as_os_str(),
        "--question".as_ref(),
        "Q".as_ref(),
        "--prompt".as_ref(),
        "P".as_ref(),
    ] as [&std::ffi::OsStr; 9]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--question") && err.contains("--prompt"), "{err}");
}
