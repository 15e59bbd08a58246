//! `blip2 bench`: every workload runs end to end at the hidden tiny size and reports the JSON
//! fields `tools/side_by_side.sh` reads; bad arguments fail with one clean line.

use crate::common::*;

#[test]
fn every_workload_reports_its_json_fields() {
    for (workload, rate) in [
        ("qformer-forward", None),
        ("stage1-step", None),
        ("itm", Some(("pairs_per_s", 3.0))),
        ("vit-forward", None),
        ("opt-generate", Some(("tokens_per_s", 5.0))),
        ("matmul", None),
    ] {
        let out = blip2(["bench", workload, "--tiny", "--json", "--iters", "3", "--threads", "1"]);
        let v = stdout_json(&out);
        assert_eq!(v["workload"], workload);
        assert_eq!(v["iters"], 3);
        assert_eq!(v["threads"], 1);
        let runs: Vec<f64> =
            v["runs_ms"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(runs.len(), 3);
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        let ms = v["ms"].as_f64().unwrap();
        assert_eq!(ms, sorted[1], "{workload}: ms is the median of {runs:?}");
        assert!(ms > 0.0 && v["min_ms"].as_f64().unwrap() == sorted[0]);
        assert!(v["cpu_ms"].as_f64().unwrap() >= 0.0);
        // A Rust process running a model holds at least a few MB, and far less than 1 GB here.
        let rss = v["peak_rss_mb"].as_f64().unwrap();
        assert!(rss > 1.0 && rss < 1024.0, "{workload}: peak RSS {rss} MB");
        // The live-heap peak is part of the resident peak.
        let live = v["peak_live_mb"].as_f64().unwrap();
        assert!(live > 0.0 && live <= rss, "{workload}: peak live {live} MB, RSS {rss} MB");
        match rate {
            Some((key, per_call)) => {
                let r = v[key].as_f64().unwrap_or_else(|| panic!("{workload}: no {key} in {v}"));
                assert!((r - per_call / (ms / 1e3)).abs() < 1e-6 * r, "{workload}: {key} {r}");
            }
            None => assert!(v.get("pairs_per_s").is_none() && v.get("tokens_per_s").is_none()),
        }
        // Tiny sizes carry no anchor FLOP count; only matmul knows its own (2 * 16^3).
        if workload == "matmul" {
            assert_eq!(v["gflop_per_call"].as_f64(), Some(2.0 * 16f64.powi(3) / 1e9));
            let g = v["gflop_per_s"].as_f64().unwrap();
            assert!((g - 2.0 * 16f64.powi(3) / 1e9 / (ms / 1e3)).abs() < 1e-9 * g.max(1.0));
        } else {
            assert!(v.get("gflop_per_s").is_none(), "{workload}: {v}");
        }
    }
}

#[test]
fn stage_one_phases_are_reported() {
    let out = blip2(["bench", "stage1-step", "--tiny", "--json", "--iters", "1", "--phases"]);
    let v = stdout_json(&out);
    for phase in ["forward", "backward", "grad_norm", "optimizer"] {
        assert!(v["phases_ms"][phase].as_f64().unwrap() > 0.0, "{phase} in {v}");
    }
    // Live heap at the end of each phase: the forward graph is alive until the gradients go
    // (a gradient's own graph holds the activations it was computed from), and nothing of it
    // is left after the update.
    let live =
        |k: &str| v["phases_ms"]["live_mb"][k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert!(live("forward") > live("built"), "{v}");
    assert!(live("optimizer") < live("backward"), "{v}");
}

#[test]
fn bad_arguments_fail_with_one_line() {
    for (args, culprit) in [
        (vec!["bench", "resnet"], "resnet"),
        (vec!["bench", "itm", "--tiny", "--iters", "0"], "--iters"),
    ] {
        let out = blip2(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(culprit), "{err}");
    }
}

#[test]
fn llava_generate_reports_prefill_decode_and_memory() {
    for dtype in ["bf16", "f32"] {
        let out = blip2([
            "bench",
            "llava-generate",
            "--tiny",
            "--layers",
            "1",
            "--dtype",
            dtype,
            "--new-tokens",
            "4",
            "--prompt-tokens",
            "5",
            "--threads",
            "1",
            "--json",
        ]);
        let v = stdout_json(&out);
        assert_eq!(v["workload"], "llava-generate");
        assert_eq!(v["llm_layers"], 1);
        assert_eq!(v["vision_layers"], 1);
        assert_eq!(v["threads"], 1);
        assert_eq!(v["weight_dtype"], dtype, "matrices held in --dtype");
        // BOS + 4 more text tokens + the tiny tower's 4 patch tokens.
        assert_eq!(v["seq_len"].as_u64(), Some(5 + v["image_tokens"].as_u64().unwrap()));
        let ids = v["generated"].as_array().unwrap();
        assert_eq!(ids.len(), 4, "{v}");
        assert!(ids.iter().all(|t| t.as_u64().is_some_and(|t| t < 320)), "{v}");
        for key in ["prefill_s", "decode_s", "decode_tokens_per_s", "build_s"] {
            assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {v}");
        }
        let rss = v["peak_rss_mb"].as_f64().unwrap();
        let live = v["peak_live_mb"].as_f64().unwrap();
        assert!(live > 0.0 && live <= rss, "{v}");
        assert!(!v["cpu_model"].as_str().unwrap().is_empty());
    }
    let out = blip2(["bench", "llava-generate", "--tiny", "--dtype", "int8"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("--dtype"), "{err}");
}

/// `bench loader` passes over the shards of a directory and says how fast (no timing asserted).
#[test]
fn bench_loader_reads_the_shards_of_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let png = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hf-tiny/images/img0.png"),
    )
    .unwrap();
    let samples: Vec<datasets::formats::ShardMembers> = (0..5)
        .map(|i| {
            (
                format!("{i:09}"),
                vec![("png".into(), png.clone()), ("txt".into(), b"a caption".to_vec())],
            )
        })
        .collect();
    datasets::formats::write_shard(&dir.path().join("00000.tar"), &samples).unwrap();
    let out = super::common::blip2([
        "bench",
        "loader",
        "--data",
        dir.path().to_str().unwrap(),
        "--batch",
        "2",
        "--workers",
        "1",
        "--json",
    ]);
    let v = super::common::stdout_json(&out);
    assert_eq!(v["warmup_batch"], 2);
    assert_eq!(v["samples"], 3);
    assert!(v["samples_per_sec"].as_f64().unwrap() > 0.0);
    let empty = tempfile::tempdir().unwrap();
    let out = super::common::blip2(["bench", "loader", "--data", empty.path().to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no .tar shards"));
}
