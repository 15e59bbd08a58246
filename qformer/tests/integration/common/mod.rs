//! Shared helpers for the parity tests: fixture paths, reference tensors, closeness checks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

mod device;
pub use device::test_device;

/// `tests/fixtures/hf-tiny/<sub>` of the workspace.
pub fn fixture(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf-tiny").join(sub)
}

pub fn load_tensors(sub: &str) -> HashMap<String, Tensor> {
    let path = fixture(sub);
    candle_core::safetensors::load(&path, &test_device())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn get<'a>(ts: &'a HashMap<String, Tensor>, name: &str) -> &'a Tensor {
    ts.get(name).unwrap_or_else(|| panic!("reference tensor {name} missing"))
}

/// Max |a - b|, after checking the shapes agree (compared on the CPU, whatever device made them).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F32).unwrap().to_device(&Device::Cpu).unwrap();
    let b = b.to_dtype(DType::F32).unwrap().to_device(&Device::Cpu).unwrap();
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

#[track_caller]
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, atol: f32) -> f32 {
    let d = max_abs_diff(got, want);
    assert!(d <= atol, "{what}: max abs diff {d:e} > {atol:e}");
    eprintln!("{what}: max abs diff {d:e}");
    d
}

/// The stage-one model as LAVIS 1.0.2 ran it for the fixtures: `itm/lavis_stage1.pth` on top of the
/// HF directory's ViT, trainable `Var`s, `ln_vision` eps as given (None = the LAVIS source's 1e-5).
pub fn lavis_stage1_model(ln_vision_eps: Option<f64>) -> qformer::weights::LoadedModel {
    use qformer::weights::{detect_parts, load, read_lavis_pth, LoadOptions, TensorSet};
    let dev = test_device();
    let (cfg, hf) = TensorSet::from_hf_dir(fixture("itm"), &dev).unwrap();
    let set = read_lavis_pth(fixture("itm/lavis_stage1.pth"), &dev)
        .unwrap()
        .merge(hf.vision_encoder_only())
        .unwrap();
    let parts = detect_parts(&cfg, &set);
    let opts = LoadOptions { trainable: true, ln_vision_eps, device: dev, ..Default::default() };
    load(&cfg, &set, parts, &opts).unwrap()
}
