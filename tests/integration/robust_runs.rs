//! Nothing already written is lost to a careless second command: a refused fresh run leaves the
//! run's config as it was, a second run on a directory in use is refused naming the holder, a
//! failed re-run of `cache-features` leaves the previous cache whole, and a cache whose shard
//! changed after it was written is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn blip2(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blip2")).args(args).output().unwrap()
}

fn ok(out: &Output) {
    assert!(out.status.success(), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
}

fn model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/itm")
}

fn tiny(out: &Path, steps: u64, extra: &[&str]) -> Output {
    let cfg = format!("model.config={}", model().join("config.json").display());
    let steps = format!("steps.max_steps={steps}");
    let mut args = vec!["pretrain", "--config", "tiny", "--out", out.to_str().unwrap()];
    args.extend(["--set", &cfg, "--set", &steps, "--set", "data.synthetic=48"]);
    args.extend(["--set", "batch.size=4", "--set", "schedule.warmup_steps=0"]);
    args.extend(extra);
    blip2(&args)
}

#[test]
fn a_refused_or_concurrent_run_changes_nothing_of_the_run_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("r1");
    ok(&tiny(&run, 2, &[]));
    let config = std::fs::read(run.join("config.toml")).unwrap();
    let refused = tiny(&run, 2, &["--set", "optimizer.lr=0.5", "--set", "seed=7"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("already has checkpoints"));
    assert_eq!(std::fs::read(run.join("config.toml")).unwrap(), config, "config rewritten");

    // A second process while the first holds the directory.
    let other = dir.path().join("r2");
    let mut first = Command::new(env!("CARGO_BIN_EXE_blip2"))
        .args(["pretrain", "--config", "tiny", "--out", other.to_str().unwrap()])
        .args(["--set", &format!("model.config={}", model().join("config.json").display())])
        .args([
            "--set",
            "steps.max_steps=400",
            "--set",
            "data.synthetic=48",
            "--set",
            "batch.size=4",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = other.join("run.lock");
    let t = std::time::Instant::now();
    while !std::fs::read_to_string(&lock).unwrap_or_default().contains("pid") {
        assert!(t.elapsed().as_secs() < 60, "the first run never took its lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = blip2(&["pretrain", "--resume", other.to_str().unwrap()]);
    first.kill().unwrap();
    first.wait().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(err.contains("in use by pid") && err.contains(&first.id().to_string()), "{err}");
}

#[test]
fn a_failed_cache_rerun_keeps_the_old_cache_and_a_changed_shard_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (world, feat) = (dir.path().join("world"), dir.path().join("feat"));
    ok(&blip2(&["synth", "--out", world.to_str().unwrap(), "--images", "8", "--image-size", "32"]));
    let ann = world.join("annotations/karpathy_train.json");
    let cache = |ann: &Path| {
        blip2(&[
            "cache-features",
            "--model",
            model().to_str().unwrap(),
            "--data",
            ann.to_str().unwrap(),
            "--images",
            world.to_str().unwrap(),
            "--out",
            feat.to_str().unwrap(),
            "--shard-size",
            "3",
        ])
    };
    ok(&cache(&ann));
    let before: Vec<(PathBuf, Vec<u8>)> = {
        let mut v: Vec<_> = std::fs::read_dir(&feat)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect();
        v.sort();
        v
    };
    // Every image of the re-run is broken: it fails, the old cache stays as it was.
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, r#"[{"image": "missing.png", "caption": "a cat"}]"#).unwrap();
    assert!(!cache(&broken).status.success());
    for (path, bytes) in &before {
        assert_eq!(&std::fs::read(path).unwrap(), bytes, "{} changed", path.display());
    }
    // A shard changed after the index was written: training refuses the cache, naming it.
    let shard =
        before.iter().find(|(p, _)| p.extension().is_some_and(|e| e == "safetensors")).unwrap();
    let mut bytes = shard.1.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&shard.0, bytes).unwrap();
    let run = dir.path().join("run");
    let cfg = format!("model.config={}", model().join("config.json").display());
    let out = blip2(&[
        "pretrain",
        "--config",
        "tiny",
        "--out",
        run.to_str().unwrap(),
        "--set",
        &cfg,
        "--set",
        &format!("data.root={}", world.display()),
        "--set",
        &format!("data.features={}", feat.display()),
        "--set",
        "steps.max_steps=1",
        "--set",
        "schedule.warmup_steps=0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("does not match")
            && err.contains(shard.0.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
}
