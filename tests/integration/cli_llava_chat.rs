//! `blip2 eval vqa` and `blip2 caption` with LLaVA directories (HF current and older names,
//! original layout): each answer is what `generate` gives for LLaVA-1.5's VQA prompt
//! `USER: <image>\n{question}\nAnswer the question using a single word or phrase. ASSISTANT:`
//! with the question as written (greedy by default, stripped); each caption is `generate
//! --question` with LLaVA-1.5's caption instruction and the same search settings.

use std::ffi::OsString;
use std::path::PathBuf;

use super::cli_generate_llava::{dir, generate_json};
use crate::common::{blip2, eval_vqa_tiny, stdout_json};

/// Python's `str.strip()` (its whitespace includes the \x1c-\x1f separators).
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

const MODELS: [&str; 3] = ["llava-tiny", "llava-tiny-oldnames", "llava-tiny-original"];

#[test]
fn llava_eval_vqa_answers_as_generate_does() {
    let vqa = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vqa-tiny");
    let images = dir("llava-tiny").join("images");
    let questions: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vqa.join("questions.json")).unwrap())
            .unwrap();
    let qs = questions["questions"].as_array().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut answers_by_model = Vec::new();
    for name in MODELS {
        let model = dir(name);
        let res = tmp.path().join(format!("{name}.json"));
        let (scores, results) = eval_vqa_tiny(&model, &images, &res, &["--max-new-tokens", "6"]);
        assert!(scores["overall"].is_number(), "{scores}");
        let rows = results.as_array().unwrap();
        assert_eq!(rows.len(), qs.len());
        let mut answers = Vec::new();
        for (q, row) in qs.iter().zip(rows) {
            assert_eq!(row["question_id"], q["question_id"]);
            let prompt = format!(
                "USER: <image>\n{}\nAnswer the question using a single word or phrase. ASSISTANT:",
                q["question"].as_str().unwrap()
            );
            let image = images.join(format!("img{}.png", q["image_id"]));
            let got = generate_json(&model, &image, &prompt, "1", "6");
            let text = py_strip(got["text"].as_str().unwrap());
            assert_eq!(row["answer"], text, "{name} question {}", q["question_id"]);
            answers.push(text.to_string());
        }
        answers_by_model.push(answers);
    }
    // Same weights, three layouts: the same answers.
    assert!(answers_by_model.windows(2).all(|w| w[0] == w[1]), "{answers_by_model:?}");
}

#[test]
fn llava_caption_is_the_answer_to_the_caption_instruction() {
    let images: Vec<PathBuf> =
        (0..2).map(|i| dir("llava-tiny").join(format!("images/img{i}.png"))).collect();
    let settings = ["--num-beams", "2", "--max-new-tokens", "5", "--min-new-tokens", "1"];
    for name in ["llava-tiny", "llava-tiny-original"] {
        let model = dir(name);
        let mut args: Vec<OsString> =
            vec!["caption".into(), "--model".into(), model.clone().into(), "--image".into()];
        args.extend(images.iter().map(|p| p.clone().into_os_string()));
        args.extend(settings.iter().map(OsString::from));
        let out = blip2(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // Random-weight text may hold newlines: compare the whole output.
        let mut want = String::new();
        for image in &images {
            let mut g: Vec<OsString> = vec![
                "generate".into(),
                "--model".into(),
                model.clone().into(),
                "--image".into(),
                image.clone().into(),
                "--question".into(),
                "Provide a one-sentence caption for the provided image.".into(),
                "--json".into(),
            ];
            g.extend(settings.iter().map(OsString::from));
            let got = stdout_json(&blip2(&g));
            want.push_str(py_strip(got["text"].as_str().unwrap()));
            want.push('\n');
        }
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{name}");
    }
}
