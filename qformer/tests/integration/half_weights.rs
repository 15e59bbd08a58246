//! Frozen LLaMA / LLaVA weights kept in bf16 as stored (`weights::frozen_var_builder`), f32
//! activations: the fixtures (tests/fixtures/llama-tiny, llava-tiny) are rounded to bf16 and
//! written as a bf16 checkpoint, read back with `TensorSet::from_hf_weights` (which must keep
//! bf16), and the model built on them is compared with **our f32 model on the same bf16-rounded
//! weights** (widened to f32 up front, the path the f32 fixture tests check against HF). Both
//! compute in f32, so they differ only in summation order: 1e-4 on logits. The f32 model itself
//! is HF-exact (llm_llama.rs, llava.rs), so this is parity with HF run in f32 on the rounded
//! weights. Both matmul regimes of the half-weight linear are crossed: at most `DOT_MAX_ROWS` rows (the
//! dot-product kernel: the fixtures' short prompts, decoding) and more (the widened GEMM).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use candle_nn::{VarBuilder, VarMap};
use qformer::llava::{load_dir, LlavaForConditionalGeneration};
use qformer::llm::{causal_lm_loss, generate, GenerationConfig, LlamaConfig, LlamaForCausalLm};
use qformer::nn::half_weight::DOT_MAX_ROWS;
use qformer::weights::{frozen_var_builder, TensorSet};

use crate::common::{max_abs_diff, test_device};

const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// `src`'s `model.safetensors` with every float tensor rounded to bf16, written to `dst` (with
/// the other files of `src`), as an HF directory saved in bf16 would be.
fn write_bf16_copy(src: &Path, dst: &Path) {
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() && p.file_name().unwrap() != "model.safetensors" {
            std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
    }
    let ts = candle_core::safetensors::load(src.join("model.safetensors"), &test_device()).unwrap();
    let bf: HashMap<String, Tensor> = ts
        .into_iter()
        .map(|(k, t)| {
            let t = if t.dtype().is_float() { t.to_dtype(DType::BF16).unwrap() } else { t };
            (k, t)
        })
        .collect();
    candle_core::safetensors::save(&bf, dst.join("model.safetensors")).unwrap();
}

/// The same tensors widened to f32 (the rounded weights, in f32).
fn widened(ts: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    ts.iter()
        .map(|(k, t)| {
            let t = if t.dtype().is_float() { t.to_dtype(DType::F32).unwrap() } else { t.clone() };
            (k.clone(), t)
        })
        .collect()
}

fn embeds(b: usize, l: usize, h: usize) -> Tensor {
    let v: Vec<f32> = (0..b * l * h).map(|i| (i as f32 * 0.731).sin() * 0.5).collect();
    Tensor::from_vec(v, (b, l, h), &test_device()).unwrap()
}

#[test]
fn a_bf16_llama_keeps_bf16_matrices_and_matches_f32_on_the_rounded_weights() {
    for case in ["mha", "gqa-llama3", "gqa-linear-tied"] {
        let src = fixtures().join("llama-tiny").join(case);
        let tmp = tempfile::tempdir().unwrap();
        write_bf16_copy(&src, tmp.path());
        let cfg = LlamaConfig::from_file(tmp.path().join("config.json")).unwrap();
        let ts = TensorSet::from_hf_weights(tmp.path(), &test_device()).unwrap().into_map();
        assert!(ts.values().all(|t| t.dtype() == DType::BF16), "{case}: the reader kept bf16");

        let half = LlamaForCausalLm::load(
            frozen_var_builder(ts.clone(), DType::F32, &test_device()),
            &cfg,
        )
        .unwrap();
        assert_eq!(half.weight_dtype(), DType::BF16, "{case}: matrices held as stored");
        assert_eq!(half.dtype(), DType::F32, "{case}: activations in f32");
        let wide = LlamaForCausalLm::load(
            VarBuilder::from_tensors(widened(&ts), DType::F32, &test_device()),
            &cfg,
        )
        .unwrap();
        assert_eq!(wide.weight_dtype(), DType::F32);

        let exp = candle_core::safetensors::load(src.join("expected.safetensors"), &test_device())
            .unwrap();
        let ids = exp["input_ids"].to_dtype(DType::U32).unwrap();
        let mask = &exp["attention_mask"];
        let (b, l) = ids.dims2().unwrap();
        assert!(b * l <= DOT_MAX_ROWS, "{case}: the fixture prompt is the few-rows regime");
        let got = half.forward_embeds(&half.embed(&ids).unwrap(), mask).unwrap();
        let want = wide.forward_embeds(&wide.embed(&ids).unwrap(), mask).unwrap();
        let d = max_abs_diff(&got, &want);
        assert!(d <= TOL, "{case}: logits (few rows) differ by {d:e}");
        // The rounding itself is visible against HF's f32 logits on the unrounded weights.
        let vs_hf = max_abs_diff(&got, &exp["logits_cumsum"]);
        eprintln!("{case}: bf16-stored vs f32-rounded {d:e}; vs HF f32 unrounded {vs_hf:e}");

        // Many rows: the widened GEMM.
        let l = DOT_MAX_ROWS / 2 + 8;
        let x = embeds(2, l, cfg.hidden_size);
        let m = Tensor::ones((2, l), DType::U32, &test_device()).unwrap();
        let d = max_abs_diff(
            &half.forward_embeds(&x, &m).unwrap(),
            &wide.forward_embeds(&x, &m).unwrap(),
        );
        assert!(d <= TOL, "{case}: logits ({} rows) differ by {d:e}", 2 * l);

        // Greedy and beam decoding (one row per sequence and beam) give the same ids.
        for beams in [1, 3] {
            let gc = GenerationConfig {
                max_new_tokens: 6,
                num_beams: beams,
                eos_token_ids: cfg.eos_token_ids(),
                ..Default::default()
            };
            let e = half.embed(&ids).unwrap();
            let a = generate(&half, &e, mask, &gc).unwrap();
            let b = generate(&wide, &wide.embed(&ids).unwrap(), mask, &gc).unwrap();
            assert_eq!(a, b, "{case}: {beams}-beam ids");
        }
    }
}

#[test]
fn a_bf16_llava_matches_f32_on_the_rounded_weights_and_trains_its_projector() {
    let src = fixtures().join("llava-tiny");
    let tmp = tempfile::tempdir().unwrap();
    write_bf16_copy(&src, tmp.path());
    let dev = test_device();
    let (cfg, _, ts) = load_dir(tmp.path(), &dev).unwrap();
    assert!(ts.values().filter(|t| t.dtype().is_float()).all(|t| t.dtype() == DType::BF16));
    let half =
        LlavaForConditionalGeneration::load(frozen_var_builder(ts.clone(), DType::F32, &dev), &cfg)
            .unwrap();
    assert_eq!(half.language_model().weight_dtype(), DType::BF16);
    let wide = LlavaForConditionalGeneration::load(
        VarBuilder::from_tensors(widened(&ts), DType::F32, &dev),
        &cfg,
    )
    .unwrap();

    let exp = candle_core::safetensors::load(src.join("expected.safetensors"), &dev).unwrap();
    let pv = exp["pixel_values"].narrow(0, 0, 1).unwrap();
    let ids: Vec<u32> =
        exp["input_ids_0_0"].to_dtype(DType::U32).unwrap().to_vec1::<u32>().unwrap();
    let ids_t = Tensor::from_vec(ids.clone(), (1, ids.len()), &dev).unwrap();
    // The tower and the projector (one image's tokens) and the LLM (the prompt).
    let d = max_abs_diff(&half.image_features(&pv).unwrap(), &wide.image_features(&pv).unwrap());
    assert!(d <= TOL, "projected features differ by {d:e}");
    let logits =
        |m: &LlavaForConditionalGeneration| m.forward(&ids_t, Some(&pv), None, None).unwrap();
    let d = max_abs_diff(&logits(&half), &logits(&wide));
    assert!(d <= TOL, "logits differ by {d:e}");

    // A trainable f32 projector over the bf16 frozen parts: the loss and its gradients match
    // the all-f32 model on the rounded weights (the backward widens the frozen matrices).
    let labels: Vec<i64> = exp["labels_0_0"].to_dtype(DType::I64).unwrap().to_vec1().unwrap();
    let answer = &labels[ids.len()..];
    let full: Vec<u32> = ids.iter().copied().chain(answer.iter().map(|&t| t as u32)).collect();
    let full_t = Tensor::from_vec(full.clone(), (1, full.len()), &dev).unwrap();
    let grads_of = |tensors: &HashMap<String, Tensor>| {
        let varmap = VarMap::new();
        let m = LlavaForConditionalGeneration::with_trainable_projector(&cfg, tensors, &varmap)
            .unwrap();
        let vars = varmap.data().lock().unwrap().clone();
        assert!(vars.values().all(|v| v.dtype() == DType::F32), "projector Vars are f32");
        let logits = m.forward(&full_t, Some(&pv), None, None).unwrap();
        let loss = causal_lm_loss(&logits, std::slice::from_ref(&labels)).unwrap();
        let g = loss.backward().unwrap();
        let w = vars["multi_modal_projector.linear_1.weight"].as_tensor().clone();
        (loss.to_scalar::<f32>().unwrap(), g.get(&w).unwrap().clone(), m)
    };
    let (loss_h, g_h, m_h) = grads_of(&ts);
    assert_eq!(m_h.language_model().weight_dtype(), DType::BF16);
    let (loss_w, g_w, _) = grads_of(&widened(&ts));
    assert!((loss_h - loss_w).abs() <= 1e-5, "loss {loss_h} vs {loss_w}");
    let d = max_abs_diff(&g_h, &g_w);
    assert!(d <= TOL, "projector gradient differs by {d:e}");
}
