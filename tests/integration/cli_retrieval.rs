//! `blip2 eval retrieval` end to end on the hf-tiny `itm` fixture, against
//! tools/retrieval_hf_reference.py (transformers 4.57.6 + LAVIS rerank/metrics).
//!
//! The CLI decodes and resizes the images itself (Pillow-exact, including Pillow's pass order), so the
//! matrices are held to 1e-4 like every other parity test. Metrics must match exactly.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny").join(rel)
}

fn run(k: usize, dir: &Path, cache: Option<&Path>) -> (Value, Value, String) {
    let out = dir.join(format!("report_{k}.json"));
    let scores = dir.join(format!("scores_{k}.json"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blip2"));
    cmd.args(["eval", "retrieval", "--json", "--batch-size", "3"])
        .arg("--model")
        .arg(fixture("itm"))
        .arg("--annotations")
        .arg(fixture("retrieval/karpathy_test.json"))
        .arg("--images")
        .arg(fixture("images"))
        .args(["--k-test", &k.to_string()])
        .arg("--out")
        .arg(&out)
        .arg("--scores")
        .arg(&scores);
    if let Some(c) = cache {
        cmd.arg("--cache").arg(c);
    }
    let res = cmd.output().unwrap();
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let stdout = String::from_utf8(res.stdout).unwrap();
    let read =
        |p: &Path| serde_json::from_str::<Value>(&std::fs::read_to_string(p).unwrap()).unwrap();
    (read(&out), read(&scores), stdout)
}

fn assert_close(name: &str, got: &Value, want: &Value, tol: f64) {
    let (g, w) = (got.as_array().unwrap(), want.as_array().unwrap());
    assert_eq!(g.len(), w.len(), "{name} rows");
    for (i, (gr, wr)) in g.iter().zip(w).enumerate() {
        let (gr, wr) = (gr.as_array().unwrap(), wr.as_array().unwrap());
        assert_eq!(gr.len(), wr.len(), "{name}[{i}]");
        for (j, (a, b)) in gr.iter().zip(wr).enumerate() {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() < tol, "{name}[{i}][{j}]: {a} vs {b}");
        }
    }
}

#[test]
fn matches_reference_and_cache_reuse_is_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("retrieval/expected.json")).unwrap())
            .unwrap();
    // k = 2 < gallery, k = 128 > gallery (both directions).
    for k in [2usize, 128] {
        let (report, scores, stdout) = run(k, tmp.path(), None);
        let want = &expected["rerank"][k.to_string().as_str()];
        assert_close("sims_i2t", &scores["sims_i2t"], &expected["sims_i2t"], 1e-4);
        assert_close("score_i2t", &scores["score_i2t"], &want["score_i2t"], 1e-4);
        assert_close("score_t2i", &scores["score_t2i"], &want["score_t2i"], 1e-4);
        let printed: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(printed["itc"], expected["itc_metrics"]);
        assert_eq!(printed["rerank"], want["metrics"]);
        assert_eq!((printed["images"].as_u64(), printed["texts"].as_u64()), (Some(4), Some(5)));
        let keys: Vec<&String> = printed.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 4, "--json prints exactly itc, rerank, images, texts");
        assert_eq!(report["rerank"], want["metrics"]);
        assert_eq!(report["k_test"].as_u64(), Some(k as u64));
    }

    let cache = tmp.path().join("cache");
    let (fresh_report, fresh, fresh_out) = run(2, tmp.path(), Some(&cache));
    assert_eq!(fresh_report["images_from_cache"].as_u64(), Some(0));
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 4, "one entry per image");
    let (cached_report, cached, cached_out) = run(2, tmp.path(), Some(&cache));
    assert_eq!(cached_report["images_from_cache"].as_u64(), Some(4));
    assert_eq!(fresh, cached, "cached images give bit-identical scores");
    assert_eq!(fresh_out, cached_out);
    // Another k reuses the same entries.
    let (other_k, _, _) = run(128, tmp.path(), Some(&cache));
    assert_eq!(other_k["images_from_cache"].as_u64(), Some(4));
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 4);
}

#[test]
fn bad_annotation_path_is_a_clear_error() {
    let res = Command::new(env!("CARGO_BIN_EXE_blip2"))
        .args(["eval", "retrieval", "--annotations", "/nonexistent/ann.json", "--images", "."])
        .arg("--model")
        .arg(fixture("itm"))
        .output()
        .unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("/nonexistent/ann.json"), "{err}");
}

/// `--lavis-checkpoint` puts the LAVIS stage-one weights (ln_vision eps 1e-5) over the directory's
/// ViT. Its ITC matrix must equal `blip2 score --lavis-checkpoint` on the same images and cleaned
/// captions (that path is pinned to LAVIS's own forward in cli_score.rs), and differ from the HF
/// directory's (eps 1e-6), so the checkpoint was really used.
#[test]
fn lavis_checkpoint_matches_score_with_the_same_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let pth = fixture("itm/lavis_stage1.pth");
    let scores = tmp.path().join("scores.json");
    let res = Command::new(env!("CARGO_BIN_EXE_blip2"))
        .args(["eval", "retrieval", "--json", "--k-test", "2"])
        .arg("--model")
        .arg(fixture("itm"))
        .arg("--lavis-checkpoint")
        .arg(&pth)
        .arg("--annotations")
        .arg(fixture("retrieval/karpathy_test.json"))
        .arg("--images")
        .arg(fixture("images"))
        .arg("--out")
        .arg(tmp.path().join("report.json"))
        .arg("--scores")
        .arg(&scores)
        .output()
        .unwrap();
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let got: Value = serde_json::from_str(&std::fs::read_to_string(&scores).unwrap()).unwrap();

    // The annotation captions after LAVIS caption cleaning, in annotation order.
    let texts = [
        "a red circle on the left of the picture",
        "a blue square next to a green triangle",
        "a yellow square",
        "there are 3 triangles in the image",
        "a photo of two cats laying on a pink blanket",
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blip2"));
    cmd.args(["score", "--json"]).arg("--model").arg(fixture("itm"));
    cmd.arg("--lavis-checkpoint").arg(&pth);
    for i in 0..4 {
        cmd.arg("--image").arg(fixture(&format!("images/img{i}.png")));
    }
    for t in texts {
        cmd.arg("--text").arg(t);
    }
    let res = cmd.output().unwrap();
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let score: Value = serde_json::from_slice(&res.stdout).unwrap();
    // The two paths are the same arithmetic (equal to the last digit here); the HF directory alone
    // differs from them by 3.9e-7, so this tolerance also tells the two apart.
    assert_close("sims_i2t vs score --lavis-checkpoint", &got["sims_i2t"], &score["itc"], 1e-7);

    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("retrieval/expected.json")).unwrap())
            .unwrap();
    let max_diff = got["sims_i2t"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["sims_i2t"].as_array().unwrap())
        .flat_map(|(a, b)| {
            a.as_array()
                .unwrap()
                .iter()
                .zip(b.as_array().unwrap())
                .map(|(x, y)| (x.as_f64().unwrap() - y.as_f64().unwrap()).abs())
        })
        .fold(0.0f64, f64::max);
    assert!(max_diff > 1e-7, "the LAVIS checkpoint left the HF numbers unchanged");
}
