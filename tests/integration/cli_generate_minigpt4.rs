//! `blip2 generate --model minigpt4.toml` against the MiniGPT-4 reference on
//! tests/fixtures/minigpt4-tiny: `--question` fills MiniGPT-4's template and `--prompt` takes the
//! same text as written; both give the reference's greedy ids (stopping after `###`) and its
//! answer text; a marker/image count mismatch is refused.

use std::path::PathBuf;

use crate::common::{blip2, eval_vqa_tiny, stdout_json};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minigpt4-tiny")
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

#[test]
fn minigpt4_generate_matches_the_reference_by_question_and_by_prompt() {
    let d = dir();
    let exp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("expected.json")).unwrap()).unwrap();
    let images = exp["images"].as_array().unwrap();
    let instructions = exp["instructions"].as_array().unwrap();
    let toml = d.join("minigpt4.toml");
    let max_new = exp["generation"]["max_new_tokens"].as_u64().unwrap().to_string();
    let mut stopped = 0;
    for case in exp["cases"].as_array().unwrap() {
        let image = d.join(images[case["image"].as_u64().unwrap() as usize].as_str().unwrap());
        let instruction = instructions[case["instruction"].as_u64().unwrap() as usize].as_str();
        let by =
            [("--question", instruction.unwrap()), ("--prompt", case["prompt"].as_str().unwrap())];
        for (flag, text) in by {
            let out = blip2([
                "generate".as_ref(),
                "--model".as_ref(),
                toml.as_os_str(),
                "--image".as_ref(),
                image.as_os_str(),
                flag.as_ref(),
                text.as_ref(),
                "--max-new-tokens".as_ref(),
                max_new.as_ref(),
                "--json".as_ref(),
            ] as [&std::ffi::OsStr; 10]);
            let got = stdout_json(&out);
            assert_eq!(ids(&got["ids"]), ids(&case["greedy_ids"]), "{flag} {text:?}");
            assert_eq!(got["text"], case["greedy_text"], "{flag} {text:?}");
        }
        stopped += case["stopped_on_###"].as_bool().unwrap() as usize;
    }
    assert!(stopped > 0, "no case exercises the ### stop");
}

#[test]
fn minigpt4_generate_refuses_a_marker_image_mismatch() {
    let d = dir();
    let img = d.join("images/img0.png");
    let out = blip2([
        "generate".as_ref(),
        "--model".as_ref(),
        d.join("minigpt4.toml").as_os_str(),
        "--image".as_ref(),
        img.as_os_str(),
        "--prompt".as_ref(),
        "###Human: no image here ###Assistant: ".as_ref(),
    ] as [&std::ffi::OsStr; 7]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0 <ImageHere> marker(s)") && err.contains("1 --image"), "{err}");
}

/// `blip2 eval vqa --model minigpt4.toml` answers each question as `generate --question` does
/// with the LAVIS-cleaned question (lower case, `.!\"()*#:;~` dropped), writes one result per
/// question in file order and scores them.
#[test]
fn minigpt4_eval_vqa_answers_as_generate_does() {
    let d = dir();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let vqa = root.join("tests/fixtures/vqa-tiny");
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("results.json");
    let toml = d.join("minigpt4.toml");
    let images = d.join("images");
    let (scores, results) =
        eval_vqa_tiny(&toml, &images, &res, &["--num-beams", "1", "--max-new-tokens", "6"]);
    assert!(scores["overall"].is_number(), "{scores}");
    let questions: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vqa.join("questions.json")).unwrap())
            .unwrap();
    let qs = questions["questions"].as_array().unwrap();
    let rows = results.as_array().unwrap();
    assert_eq!(rows.len(), qs.len());
    for (q, row) in qs.iter().zip(rows) {
        assert_eq!(row["question_id"], q["question_id"]);
        let cleaned: String = q["question"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .chars()
            .filter(|c| !".!\"()*#:;~".contains(*c))
            .collect();
        let image = images.join(format!("img{}.png", q["image_id"]));
        let got = stdout_json(&blip2([
            "generate".as_ref(),
            "--model".as_ref(),
            toml.as_os_str(),
            "--image".as_ref(),
            image.as_os_str(),
            "--question".as_ref(),
            cleaned.trim_end().as_ref(),
            "--max-new-tokens".as_ref(),
            "6".as_ref(),
            "--json".as_ref(),
        ] as [&std::ffi::OsStr; 10]));
        assert_eq!(row["answer"], got["text"], "question {}", q["question_id"]);
    }
}

/// `blip2 caption --model minigpt4.toml` prints, per image, what `generate --question` gives for
/// MiniGPT-4's "Describe this image in detail." with the same search settings.
#[test]
fn minigpt4_caption_is_the_described_image() {
    let d = dir();
    let toml = d.join("minigpt4.toml");
    let images: Vec<PathBuf> = (0..2).map(|i| d.join(format!("images/img{i}.png"))).collect();
    let settings = ["--num-beams", "2", "--max-new-tokens", "5", "--min-new-tokens", "1"];
    let mut args: Vec<std::ffi::OsString> =
        vec!["caption".into(), "--model".into(), toml.clone().into(), "--image".into()];
    args.extend(images.iter().map(|p| p.clone().into_os_string()));
    args.extend(settings.iter().map(std::ffi::OsString::from));
    let out = blip2(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> =
        String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), images.len());
    for (image, line) in images.iter().zip(&lines) {
        let mut g: Vec<std::ffi::OsString> = vec![
            "generate".into(),
            "--model".into(),
            toml.clone().into(),
            "--image".into(),
            image.clone().into(),
            "--question".into(),
            "Describe this image in detail.".into(),
            "--json".into(),
        ];
        g.extend(settings.iter().map(std::ffi::OsString::from));
        let got = stdout_json(&blip2(&g));
        assert_eq!(got["text"].as_str().unwrap(), line);
    }
}
