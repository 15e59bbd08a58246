//! Crash safety of `blip2 pretrain`: a run SIGKILLed at 20 seeded random moments (checkpointing
//! every step, so many kills land inside a checkpoint write) and resumed each time ends with
//! the same weights and losses as an uninterrupted run, bit for bit; a checkpoint that cannot
//! be written is reported by path and leaves the previous one loadable.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const STEPS: u64 = 12;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blip2"))
}

fn fresh_args(dir: &Path) -> Vec<String> {
    let cfg =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/itm/config.json");
    [
        "pretrain",
        "--config",
        "tiny",
        "--out",
        &dir.display().to_string(),
        "--set",
        &format!("model.config={}", cfg.display()),
        "--set",
        &format!("steps.max_steps={STEPS}"),
        "--set",
        "data.synthetic=48",
        "--set",
        "batch.size=4",
        "--set",
        "checkpointing.every_steps=1",
        "--set",
        "checkpointing.keep_last=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `--resume` once the run directory has its config, else the fresh command (a kill before
/// the config was written leaves nothing to resume).
fn args_for(dir: &Path, fresh: &dyn Fn(&Path) -> Vec<String>) -> Vec<String> {
    if dir.join("config.toml").is_file() {
        vec!["pretrain".into(), "--resume".into(), dir.display().to_string()]
    } else {
        fresh(dir)
    }
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn final_weights(dir: &Path) -> Vec<u8> {
    let p = dir.join(format!("checkpoints/step-{STEPS:06}/model.safetensors"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn losses(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{}:{}:{}",
                v["step"],
                v["losses"],
                v.get("val_loss").unwrap_or(&serde_json::Value::Null)
            )
        })
        .collect()
}

/// Runs `fresh` uninterrupted, then again killed at `n` seeded random moments and resumed each
/// time; both must end with the same metrics and final weights.
fn random_kills_lose_nothing(fresh: &dyn Fn(&Path) -> Vec<String>, root: &Path, n: usize) {
    let reference = root.join("reference");
    let t0 = Instant::now();
    ok(&bin().args(fresh(&reference)).output().unwrap());
    let full = t0.elapsed();

    let run = root.join("killed");
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (mut kills, mut mid_checkpoint, mut attempts) = (0, 0, 0);
    while kills < n {
        attempts += 1;
        assert!(attempts < 10 * n + 100, "could not land {n} kills");
        // Anywhere from process start to 60% of a whole run (a resumed run has less left to do).
        let delay = full.mul_f64(rng.random_range(0.0..0.6));
        let mut child = bin()
            .args(args_for(&run, fresh))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            // Finished before the kill: start over with a new directory so kills keep landing.
            std::fs::remove_dir_all(&run).unwrap();
            continue;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        let ckdir = run.join("checkpoints");
        if std::fs::read_dir(&ckdir)
            .is_ok_and(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".tmp")))
        {
            mid_checkpoint += 1;
        }
    }
    // And finish it.
    ok(&bin().args(args_for(&run, fresh)).output().unwrap());
    eprintln!(
        "{kills} kills ({mid_checkpoint} inside a checkpoint write) in {attempts} attempts; a full run takes {full:?}"
    );
    assert_eq!(losses(&run), losses(&reference), "metrics differ from the uninterrupted run");
    assert_eq!(final_weights(&run), final_weights(&reference), "final weights differ");
    let l = losses(&reference);
    assert_eq!(l.len() as u64, STEPS);
    assert_ne!(l[0], l[l.len() - 1], "the run must train for the comparison to mean anything");
}

#[test]
fn twenty_random_kills_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    random_kills_lose_nothing(&fresh_args, tmp.path(), 20);
}

/// The same on webdataset shards read in place, mixed with the world's Karpathy captions: a
/// kill mid-shard resumes on the same samples.
#[test]
fn random_kills_on_webdataset_shards_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let world = tmp.path().join("world");
    ok(&bin()
        .args(["synth", "--out", world.to_str().unwrap(), "--images", "48", "--image-size", "32"])
        .output()
        .unwrap());
    let cfg = tmp.path().join("shards.toml");
    let urls = format!("{}/shards/{{00000..00000}}.tar", world.display());
    let text = super::cli_pretrain_sources::mixed_sources_toml(&world, &urls, 4, STEPS)
        .replace("[checkpointing]\n", "[checkpointing]\nkeep_last = 2\n");
    std::fs::write(&cfg, text).unwrap();
    let fresh = |dir: &Path| -> Vec<String> {
        ["pretrain", "--config", cfg.to_str().unwrap(), "--out", dir.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    random_kills_lose_nothing(&fresh, tmp.path(), 8);
}

#[test]
fn unwritable_checkpoint_is_reported_and_the_previous_one_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    ok(&bin().args(fresh_args(&reference)).output().unwrap());

    let run = tmp.path().join("run");
    let mut a = fresh_args(&run);
    a.extend(["--stop-after".into(), "1".into()]);
    ok(&bin().args(&a).output().unwrap());
    let ckdir = run.join("checkpoints");
    let step1 = std::fs::read(ckdir.join("step-000001/model.safetensors")).unwrap();

    // A file where the step-2 checkpoint's scratch directory goes: the write must fail.
    let blocker = ckdir.join("step-000002.tmp");
    std::fs::write(&blocker, b"in the way").unwrap();
    let out = bin().args(args_for(&run, &fresh_args)).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("checkpoint at step 2 not written") && line.contains("step-000002.tmp"),
        "{line}"
    );
    assert_eq!(std::fs::read(ckdir.join("step-000001/model.safetensors")).unwrap(), step1);
    assert!(!ckdir.join("step-000002").exists());

    // Read-only checkpoints directory (skipped where permissions are not enforced, e.g. root).
    std::fs::remove_file(&blocker).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ckdir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let enforced = std::fs::write(ckdir.join("probe"), b"").is_err();
        let out = enforced.then(|| bin().args(args_for(&run, &fresh_args)).output().unwrap());
        std::fs::set_permissions(&ckdir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _ = std::fs::remove_file(ckdir.join("probe"));
        if let Some(out) = out {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && err.contains("checkpoints"), "{err}");
            assert!(err.to_lowercase().contains("permission denied"), "{err}");
        } else {
            eprintln!("read-only case skipped: permissions are not enforced for this user");
        }
    }

    // The surviving step-1 checkpoint resumes to the same result as an uninterrupted run.
    ok(&bin().args(args_for(&run, &fresh_args)).output().unwrap());
    assert_eq!(final_weights(&run), final_weights(&reference));

    // A checkpoints path that is a file is refused up front, by name.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("checkpoints"), b"not a directory").unwrap();
    let out = bin().args(fresh_args(&other)).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    assert!(err.contains("checkpoints"), "{err}");
}

/// Divergence: an absurd learning rate makes every step after the first non-finite; the guard
/// skips and counts them, and stops the run with a clear message after
/// `guard.max_consecutive_bad_steps` in a row.
#[test]
fn diverging_run_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut a = fresh_args(&run);
    for s in [
        "optimizer.lr=1e30",
        "optimizer.weight_decay=0",
        "optimizer.max_grad_norm=1e30",
        "schedule.kind=constant",
        "guard.max_consecutive_bad_steps=3",
    ] {
        a.extend(["--set".to_string(), s.to_string()]);
    }
    let out = bin().args(&a).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a diverging run must stop: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("training diverged: 3 consecutive non-finite steps"), "{line}");
    // The skipped steps are in metrics.jsonl, counted.
    let recs: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let skipped: Vec<u64> = recs.iter().map(|r| r["skipped_steps"].as_u64().unwrap()).collect();
    assert!(skipped.windows(2).all(|w| w[1] >= w[0]), "{skipped:?}");
    assert_eq!(
        *skipped.last().unwrap(),
        2,
        "two skipped steps logged before the stop: {skipped:?}"
    );
    // The last checkpoint written holds finite weights (skipped steps never touched them).
    let ck = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.safetensors").is_file())
        .max()
        .expect("a checkpoint before the divergence");
    let t = candle_core::safetensors::load(ck.join("model.safetensors"), &candle_core::Device::Cpu)
        .unwrap();
    for (name, v) in t {
        let v = v.flatten_all().unwrap().to_dtype(candle_core::DType::F32).unwrap();
        let bad = v.to_vec1::<f32>().unwrap().iter().filter(|x| !x.is_finite()).count();
        assert_eq!(bad, 0, "{name} has {bad} non-finite values in {}", ck.display());
    }
}
