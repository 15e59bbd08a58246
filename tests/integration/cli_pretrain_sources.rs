//! `blip2 pretrain` on `[[data.sources]]`: the synthetic world's webdataset shards and its
//! Karpathy JSON mixed 3:1, what each source gave in `data_report.json`, and exact resume
//! through the mixture and the shard members read in place.

use std::path::{Path, PathBuf};

use super::cli_pretrain_stage2::{loss_records, metrics, ok, pretrain, stop_and_resume};
use super::common::blip2;

fn world(dir: &Path) -> PathBuf {
    let w = dir.join("world");
    let out =
        blip2(["synth", "--out", w.to_str().unwrap(), "--images", "24", "--image-size", "32"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    w
}

/// A run config on the world's shards (`urls`, weight 3) mixed with its captions (weight 1):
/// the hf-tiny model config, constant lr, clipping, a checkpoint and a metrics line every step.
pub(crate) fn mixed_sources_toml(world: &Path, urls: &str, batch: usize, steps: u64) -> String {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/itm/config.json");
    format!(
        r#"seed = 4
[model]
config = "{model}"
[data]
image_size = 32
max_txt_len = 16
[[data.sources]]
kind = "webdataset"
urls = "{urls}"
weight = 3.0
[[data.sources]]
kind = "karpathy"
annotations = "{world}/annotations/karpathy_train.json"
images = "{world}"
weight = 1.0
[optimizer]
lr = 1e-3
max_grad_norm = 1.0
[schedule]
kind = "constant"
[batch]
size = {batch}
[steps]
epochs = 100
max_steps = {steps}
[checkpointing]
every_steps = 1
[logging]
every_steps = 1
"#,
        model = model.display(),
        world = world.display(),
    )
}

/// [`mixed_sources_toml`] for 6 steps of 8 with a second shard holding a sample without a caption
/// and one whose image is corrupt.
fn config(dir: &Path, world: &Path) -> PathBuf {
    let urls = format!(
        "{}/shards/{{00000..00000}}.tar::{}",
        world.display(),
        dir.join("extra.tar").display()
    );
    let cfg = mixed_sources_toml(world, &urls, 8, 6);
    // A second shard: one sample with an image but no caption.
    let png = std::fs::read(world.join("images/000000.png")).unwrap();
    datasets::formats::webdataset::write_shard(
        &dir.join("extra.tar"),
        &[
            ("nocap".into(), vec![("png".into(), png)]),
            (
                "corrupt".into(),
                vec![("jpg".into(), b"\xff\xd8 no".to_vec()), ("txt".into(), b"x".to_vec())],
            ),
        ],
    )
    .unwrap();
    let path = dir.join("run.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

#[test]
fn mixed_sources_train_report_what_they_left_out_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    let cfg = config(dir.path(), &w);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let out = pretrain(&["--config", cfg.to_str().unwrap(), "--out", a.to_str().unwrap()]);
    ok(&out);
    // Every step says how long it waited for its batch.
    assert!(metrics(&a).iter().all(|r| r["input_wait_s"].as_f64().is_some_and(|w| w >= 0.0)));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("data_report.json")).unwrap())
            .unwrap();
    let sources = report["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
    assert!(sources[0]["samples"].as_u64().unwrap() > 0);
    assert_eq!(sources[0]["skipped"], 1);
    assert_eq!(sources[0]["skipped_keys"][0]["key"], "extra.tar/nocap");
    assert_eq!(sources[1]["skipped"], 0);
    // The corrupt image is an item of the index, left out when the loader decodes it: listed once
    // per epoch it was drawn in, and a resumed run lists it as the uninterrupted one does.
    let skipped = |run: &Path| -> Vec<String> {
        std::fs::read_to_string(run.join("data_skipped.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let in_a = skipped(&a);
    assert!(!in_a.is_empty() && in_a.iter().all(|l| l.contains("extra.tar/corrupt")), "{in_a:?}");
    // Brought up to the last checkpoint: where the cursor stood, what each source gave this
    // epoch up to it (together, the cursor's position), and the skip log counted by reason.
    let reading = &report["reading"];
    let position = reading["position"].as_u64().unwrap();
    let read: Vec<u64> = sources.iter().map(|s| s["read_this_epoch"].as_u64().unwrap()).collect();
    assert_eq!(read.iter().sum::<u64>(), position, "{report}");
    assert!(read[0] > read[1], "weights 3:1 read {read:?}");
    assert_eq!(reading["skipped"].as_u64().unwrap() as usize, in_a.len());
    assert_eq!(reading["skipped_by_reason"]["cannot decode image"], in_a.len());

    stop_and_resume(&cfg, &b, 3);
    let losses = loss_records;
    assert_eq!(losses(&a).len(), 6);
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(skipped(&b), in_a);
    let weights =
        |run: &Path| std::fs::read(run.join("checkpoints/step-000006/model.safetensors")).unwrap();
    assert_eq!(weights(&a), weights(&b), "final weights differ");
}

#[test]
fn sources_beside_a_data_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    let cfg = config(dir.path(), &w);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[data]\n", &format!("[data]\nroot = \"{}\"\n", w.display()));
    std::fs::write(&cfg, text).unwrap();
    let out = pretrain(&[
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("data.sources"), "{err}");
}

/// `cache-features --config` caches what the run's sources hold (the corrupt image left out and
/// listed) and a run on those sources trains from the cache.
#[test]
fn cache_features_reads_the_run_sources_and_training_reads_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    let cfg = config(dir.path(), &w);
    let cache = dir.path().join("cache");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/itm");
    let out = blip2([
        "cache-features",
        "--model",
        model.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        cache.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cache.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["skipped"].as_array().unwrap().len(), 1);
    assert_eq!(index["skipped"][0]["key"], "extra.tar/corrupt");
    assert!(cache.join("data_report.json").is_file());
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[data]\n", &format!("[data]\nfeatures = \"{}\"\n", cache.display()))
        .replace("max_steps = 6", "max_steps = 2");
    std::fs::write(&cfg, text).unwrap();
    let run = dir.path().join("cached");
    ok(&pretrain(&["--config", cfg.to_str().unwrap(), "--out", run.to_str().unwrap()]));
    assert_eq!(metrics(&run).len(), 2);
}
