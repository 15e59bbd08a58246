//! `blip2 cache-features` then `blip2 pretrain` with `data.features`: the cached rows are the
//! frozen ViT's output for exactly the image their key names, and training runs from them.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use datasets::image::{decode_file, eval_transform, DecodeLimits, ImageProcessorConfig};
use qformer::weights::{load_hf_dir, LoadOptions};

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/itm")
}

fn blip2(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_blip2")).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "blip2 {args:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn cached_features_match_the_vit_and_train() {
    let dir = tempfile::tempdir().unwrap();
    let (world, feat, run) =
        (dir.path().join("world"), dir.path().join("feat"), dir.path().join("run"));
    blip2(&["synth", "--out", s(&world), "--images", "20", "--image-size", "32"]);
    let ann = world.join("annotations/karpathy_train.json");
    blip2(&[
        "cache-features",
        "--model",
        s(&model_dir()),
        "--data",
        s(&ann),
        "--images",
        s(&world),
        "--out",
        s(&feat),
        "--shard-size",
        "5",
        "--batch-size",
        "3",
    ]);

    // Every cached row against the ViT run on its image here, one at a time.
    let dev = Device::Cpu;
    let model = load_hf_dir(model_dir(), &LoadOptions::default()).unwrap().model;
    let pp =
        ImageProcessorConfig::from_file(&model_dir().join("preprocessor_config.json")).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(feat.join("index.json")).unwrap()).unwrap();
    let shards = index["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 4, "16 train images in shards of 5");
    let mut n = 0;
    for shard in shards {
        let t = candle_core::safetensors::load(feat.join(shard["file"].as_str().unwrap()), &dev)
            .unwrap();
        let feats = &t["features"];
        for (i, key) in shard["keys"].as_array().unwrap().iter().enumerate() {
            let img =
                decode_file(&world.join(key.as_str().unwrap()), DecodeLimits::default()).unwrap();
            let px = eval_transform(&img, &pp);
            let px =
                Tensor::from_vec(px.data, (1, px.channels, px.height, px.width), &dev).unwrap();
            let want = model.vision_features(&px).unwrap().squeeze(0).unwrap();
            let d = (feats.get(i).unwrap() - want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-5, "{key}");
            n += 1;
        }
    }
    assert_eq!(n, 16);

    blip2(&[
        "pretrain",
        "--config",
        "tiny",
        "--out",
        s(&run),
        "--set",
        &format!("model.init_from={}", model_dir().display()),
        "--set",
        &format!("data.root={}", world.display()),
        "--set",
        &format!("data.features={}", feat.display()),
        "--set",
        "steps.max_steps=3",
        "--set",
        "batch.size=4",
    ]);
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3);
}
