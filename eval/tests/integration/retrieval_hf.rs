//! The retrieval loop against transformers 4.57.6 `Blip2ForImageTextRetrieval` + LAVIS `compute_sim_matrix`
//! / `_report_metrics` (tools/retrieval_hf_reference.py), fed the exact HF model inputs.

use std::path::PathBuf;

use candle_core::{DType, Device};
use eval::retrieval::{compute_scores, encode_images, ImageGallery, RetrievalMetrics, TextGallery};
use qformer::masks::PaddingMask;
use qformer::weights::{load_hf_dir, LoadOptions};
use serde_json::Value;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf-tiny").join(rel)
}

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn assert_close(name: &str, got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len(), "{name} rows");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{name}[{i}] columns");
        for (j, (a, b)) in g.iter().zip(w).enumerate() {
            assert!((a - b).abs() < 1e-4, "{name}[{i}][{j}]: {a} vs {b}");
        }
    }
}

fn metrics(v: &Value) -> RetrievalMetrics {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn sims_rerank_and_metrics_match_hf_and_lavis() {
    let dev = Device::Cpu;
    let model = load_hf_dir(fixture("itm"), &LoadOptions::default()).unwrap().model;
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("retrieval/expected.json")).unwrap())
            .unwrap();
    let inputs =
        candle_core::safetensors::load(fixture("retrieval/inputs.safetensors"), &dev).unwrap();
    let pixels = &inputs["pixel_values"];
    let ids = inputs["input_ids"].to_dtype(DType::U32).unwrap();
    let padding = PaddingMask::from_tensor(&inputs["attention_mask"]).unwrap();
    let img2txt: Vec<Vec<usize>> = serde_json::from_value(expected["img2txt"].clone()).unwrap();
    let txt2img: Vec<usize> = serde_json::from_value(expected["txt2img"].clone()).unwrap();

    // Odd batch sizes so every loop runs a partial batch.
    for batch in [1, 3] {
        let parts: Vec<_> = (0..4)
            .step_by(batch)
            .map(|s| {
                encode_images(&model, &pixels.narrow(0, s, batch.min(4 - s)).unwrap()).unwrap()
            })
            .collect();
        let images = ImageGallery::from_encoded(&model, &parts).unwrap();
        let texts = TextGallery::encode(&model, ids.clone(), padding.clone(), batch).unwrap();
        for k in ["2", "128"] {
            let scores =
                compute_scores(&model, &images, &texts, k.parse().unwrap(), batch, &mut |_, _| {})
                    .unwrap();
            assert_close("sims_i2t", &scores.sims_i2t, &matrix(&expected["sims_i2t"]));
            let want = &expected["rerank"][k];
            assert_close("score_i2t", &scores.score_i2t, &matrix(&want["score_i2t"]));
            assert_close("score_t2i", &scores.score_t2i, &matrix(&want["score_t2i"]));
            let report = scores.report(&img2txt, &txt2img).unwrap();
            assert_eq!(report.itc, metrics(&expected["itc_metrics"]), "k={k} itc");
            assert_eq!(report.rerank, Some(metrics(&want["metrics"])), "k={k} rerank");
            assert_eq!((report.images, report.texts), (4, 5));
        }
    }
    // k_test = 1 re-ranks only the best candidate of each row: the rest must stay at LAVIS's filler.
    let parts = vec![encode_images(&model, pixels).unwrap()];
    let images = ImageGallery::from_encoded(&model, &parts).unwrap();
    let texts = TextGallery::encode(&model, ids, padding, 8).unwrap();
    let s = compute_scores(&model, &images, &texts, 1, 8, &mut |_, _| {}).unwrap();
    for row in &s.score_i2t {
        assert_eq!(row.iter().filter(|&&x| x == -100.0).count(), 4);
    }
    assert!(compute_scores(&model, &images, &texts, 0, 8, &mut |_, _| {}).is_err());
}
