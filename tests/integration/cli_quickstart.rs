//! `blip2 quickstart --scale ci`: the whole pipeline (world, ViT and LM pretraining, stage one,
//! retrieval, stage two, zero-shot VQA, report) at toy sizes, twice with the same seed (LM beside
//! stage one, then phases one after another).

use std::path::Path;
use std::process::Command;

fn quickstart(out: &Path, extra: &[&str]) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_blip2"))
        .args(["quickstart", "--scale", "ci", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .expect("run blip2");
    assert!(
        o.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(out.join("results.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn without_times(mut v: serde_json::Value) -> serde_json::Value {
    v.as_object_mut().unwrap().remove("timings");
    for run in ["vit", "lm", "stage1", "stage2"] {
        v[run].as_object_mut().unwrap().remove("seconds");
    }
    v
}

#[test]
fn ci_quickstart_runs_every_phase_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let ra = quickstart(&a, &[]);
    for f in [
        "results.md",
        "runs/vit/curves.png",
        "runs/lm/curves.png",
        "runs/stage1/curves.png",
        "runs/stage2/curves.png",
        "runs/stage1/metrics.jsonl",
        "vqa/results_image.json",
        "model/config.json",
        "model/tokenizer.json",
        "model/model.safetensors",
    ] {
        assert!(a.join(f).is_file(), "{f} missing");
    }
    // Every training run learns something even at toy size.
    for (run, key) in
        [("vit", "itc"), ("lm", "text_lm"), ("stage1", "total"), ("stage2", "caption_lm")]
    {
        let first = ra[run]["first"][key].as_f64().unwrap();
        let last = ra[run]["last"][key].as_f64().unwrap();
        assert!(last < first, "{run}: {key} went {first} -> {last}");
    }
    let md = std::fs::read_to_string(a.join("results.md")).unwrap();
    assert!(md.contains("pretrained contrastively"), "results.md says what the ViT was");
    for section in ["## Retrieval", "## Zero-shot VQA", "## Captions", "## Time per phase"] {
        assert!(md.contains(section), "{section} missing from results.md");
    }
    for row in ra["vqa"]["rows"].as_array().unwrap() {
        let o = row["overall"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&o), "{row}");
    }
    assert_eq!(
        ra["timings"]["overlapped"], true,
        "one thread per phase runs the LM beside stage one"
    );
    // A second run with the same seed gives the same numbers, though with two threads per phase
    // its phases run one after another instead of the LM beside stage one.
    let rb = quickstart(&b, &["--threads", "2"]);
    assert_eq!(rb["timings"]["overlapped"], false);
    assert_eq!(without_times(ra), without_times(rb));
    // And refuses to overwrite a finished run.
    let o = Command::new(env!("CARGO_BIN_EXE_blip2"))
        .args(["quickstart", "--scale", "ci", "--out"])
        .arg(&a)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already holds"));
}
