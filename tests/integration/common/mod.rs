//! Shared helpers for the CLI tests that run the built binary on the tiny HF fixture.
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};

pub const ATOL: f32 = 1e-4;

/// The fixture captions (tests/fixtures/hf-tiny/itm/expected.json `texts`).
pub const TEXTS: [&str; 5] = [
    "a red circle on the left of the picture",
    "a blue square next to a green triangle",
    "there are 3 triangles in the image",
    "A photo of two cats laying on a pink blanket!",
    "a yellow square",
];

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny").join(rel)
}

pub fn images() -> Vec<PathBuf> {
    (0..4).map(|i| fixture(&format!("images/img{i}.png"))).collect()
}

pub fn blip2<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_blip2")).args(args).output().expect("run blip2")
}

/// `--image` followed by the paths.
pub fn image_args(paths: &[PathBuf]) -> Vec<OsString> {
    std::iter::once(OsString::from("--image"))
        .chain(paths.iter().map(|p| p.clone().into_os_string()))
        .collect()
}

/// `--text` followed by the texts.
pub fn text_args(texts: &[&str]) -> Vec<OsString> {
    std::iter::once(OsString::from("--text")).chain(texts.iter().map(OsString::from)).collect()
}

pub fn os(s: impl AsRef<OsStr>) -> OsString {
    s.as_ref().to_os_string()
}

pub fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "blip2 failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("stdout is not one JSON object ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

pub fn json_file(rel: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(rel)).unwrap()).unwrap()
}

pub fn matrix(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|r| r.as_array().expect("row").iter().map(|x| x.as_f64().expect("number")).collect())
        .collect()
}

/// Every entry within `atol`, reporting each offending (row, column).
pub fn assert_matrix_close(what: &str, got: &[Vec<f64>], want: &[Vec<f64>], atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    let mut bad = Vec::new();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: row {i} length");
        for (j, (a, b)) in g.iter().zip(w).enumerate() {
            if (a - b).abs() > atol || !a.is_finite() {
                bad.push(format!("[{i}][{j}] got {a} want {b} (diff {:.2e})", (a - b).abs()));
            }
        }
    }
    assert!(bad.is_empty(), "{what} off by more than {atol}: {}", bad.join("; "));
}

pub fn load_tensors(path: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// `blip2 eval vqa --json` of `model` on tests/fixtures/vqa-tiny, images `{images}/img{id}.png`,
/// results written to `out`, plus `extra` flags: the printed scores and the results file.
pub fn eval_vqa_tiny(
    model: &Path,
    images: &Path,
    out: &Path,
    extra: &[&str],
) -> (serde_json::Value, serde_json::Value) {
    let vqa = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vqa-tiny");
    let mut args: Vec<OsString> = ["eval", "vqa", "--model"].map(OsString::from).to_vec();
    args.push(model.into());
    for (flag, path) in [
        ("--questions", vqa.join("questions.json")),
        ("--annotations", vqa.join("annotations.json")),
        ("--images", images.to_path_buf()),
        ("--out", out.to_path_buf()),
    ] {
        args.push(flag.into());
        args.push(path.into());
    }
    args.extend(["--image-pattern", "img{image_id}.png", "--json"].map(OsString::from));
    args.extend(extra.iter().map(OsString::from));
    let scores = stdout_json(&blip2(&args));
    let results = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    (scores, results)
}
