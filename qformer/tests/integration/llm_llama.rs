//! `LlamaForCausalLm` vs HF transformers 4.57.6 `LlamaForCausalLM` (tests/fixtures/llama-tiny,
//! from tools/llama_fixture.py): logits, loss, gradients to every weight, config errors.
//!
//! Position convention of the reference: HF's `forward(input_ids, attention_mask)` without
//! `position_ids` uses `0..L-1` for every row whatever the padding (the fixture script asserts
//! this against an explicit arange); `expected.safetensors` stores those as `position_ids` with
//! `logits`, and also `logits_cumsum`, computed with `position_ids = cumsum(mask) - 1` clamped at
//! 0, the positions `LlamaForCausalLm::forward_embeds` derives from the mask. Row 1 is right-padded,
//! so the two conventions agree on the real tokens and every query row sees at least one key:
//! logits are compared at every position, padded ones included.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use qformer::llm::{causal_lm_loss, LlamaConfig, LlamaForCausalLm, IGNORE_INDEX};

use crate::common::{max_abs_diff, test_device};

const CASES: [&str; 3] = ["mha", "gqa-llama3", "gqa-linear-tied"];
const LOGITS_TOL: f32 = 1e-4;
const LOSS_TOL: f32 = 1e-5;

fn dir(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llama-tiny").join(case)
}

struct Case {
    cfg: LlamaConfig,
    weights: HashMap<String, Tensor>,
    expected: HashMap<String, Tensor>,
}

fn load_case(case: &str) -> Case {
    let d = dir(case);
    let dev = test_device();
    let cfg = LlamaConfig::from_file(d.join("config.json")).expect("config");
    let weights = candle_core::safetensors::load(d.join("model.safetensors"), &dev).expect("w");
    let expected =
        candle_core::safetensors::load(d.join("expected.safetensors"), &dev).expect("expected");
    Case { cfg, weights, expected }
}

fn rows_i64(t: &Tensor) -> Vec<Vec<i64>> {
    t.to_dtype(DType::I64).unwrap().to_vec2::<i64>().unwrap()
}

fn rows_u32(t: &Tensor) -> Vec<Vec<u32>> {
    rows_i64(t).into_iter().map(|r| r.into_iter().map(|x| x as u32).collect()).collect()
}

/// HF labels: input_ids with the padded positions set to -100.
fn labels(c: &Case) -> Vec<Vec<i64>> {
    let ids = rows_i64(&c.expected["input_ids"]);
    let mask = rows_i64(&c.expected["attention_mask"]);
    ids.iter()
        .zip(&mask)
        .map(|(r, m)| {
            r.iter().zip(m).map(|(&t, &k)| if k == 1 { t } else { IGNORE_INDEX }).collect()
        })
        .collect()
}

fn ids(c: &Case) -> Tensor {
    c.expected["input_ids"].to_dtype(DType::U32).unwrap()
}

#[test]
fn llama_logits_and_loss_match_hf() {
    for case in CASES {
        let c = load_case(case);
        let vb = VarBuilder::from_tensors(c.weights.clone(), DType::F32, &test_device());
        let model = LlamaForCausalLm::load(vb, &c.cfg).unwrap();
        let mask = &c.expected["attention_mask"];
        let embeds = model.embed(&ids(&c)).unwrap();

        // HF forward's own positions (0..L-1 per row).
        let pos = rows_u32(&c.expected["position_ids"]);
        let logits = model.forward_embeds_at(&embeds, mask, &pos).unwrap();
        assert_eq!(logits.dtype(), DType::F32);
        let want = &c.expected["logits"];
        let real: Vec<(usize, usize)> = rows_i64(mask)
            .iter()
            .enumerate()
            .flat_map(|(b, r)| {
                r.iter().enumerate().filter(|(_, &k)| k == 1).map(move |(t, _)| (b, t))
            })
            .collect();
        let mut d_real = 0f32;
        for &(b, t) in &real {
            let d = max_abs_diff(
                &logits.get(b).unwrap().get(t).unwrap(),
                &want.get(b).unwrap().get(t).unwrap(),
            );
            d_real = d_real.max(d);
        }
        let d_all = max_abs_diff(&logits, want);
        assert!(d_real <= LOGITS_TOL, "{case}: logits on real tokens: max diff {d_real:e}");
        assert!(d_all <= LOGITS_TOL, "{case}: logits on all positions: max diff {d_all:e}");

        // Mask-derived positions (generate's cumsum convention).
        let logits_c = model.forward_embeds(&embeds, mask).unwrap();
        let d_cumsum = max_abs_diff(&logits_c, &c.expected["logits_cumsum"]);
        assert!(d_cumsum <= LOGITS_TOL, "{case}: cumsum-position logits: max diff {d_cumsum:e}");

        let loss = causal_lm_loss(&logits, &labels(&c)).unwrap().to_scalar::<f32>().unwrap();
        let want_loss = c.expected["loss"].to_vec1::<f32>().unwrap()[0];
        let d_loss = (loss - want_loss).abs();
        assert!(d_loss <= LOSS_TOL, "{case}: loss {loss} vs HF {want_loss} (diff {d_loss:e})");
        eprintln!(
            "{case}: logits max diff real {d_real:e} all {d_all:e} cumsum {d_cumsum:e}; \
             loss diff {d_loss:e}"
        );
    }
}

#[test]
fn llama_loss_reaches_every_weight() {
    for case in CASES {
        let c = load_case(case);
        let dev = test_device();
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().unwrap();
            for (name, t) in &c.weights {
                data.insert(name.clone(), Var::from_tensor(t).unwrap());
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let model = LlamaForCausalLm::load(vb, &c.cfg).unwrap();
        // The VarBuilder created nothing beyond the checkpoint's tensors.
        assert_eq!(varmap.all_vars().len(), c.weights.len(), "{case}: vars vs checkpoint");
        let embeds = model.embed(&ids(&c)).unwrap();
        let logits = model.forward_embeds(&embeds, &c.expected["attention_mask"]).unwrap();
        let loss = causal_lm_loss(&logits, &labels(&c)).unwrap();
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for name in names {
            let g = grads
                .get(data[name].as_tensor())
                .unwrap_or_else(|| panic!("{case}: {name} got no gradient"));
            let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
            assert!(g.iter().all(|x| x.is_finite()), "{case}: {name} has a non-finite gradient");
            assert!(g.iter().any(|&x| x != 0.0), "{case}: {name} has an all-zero gradient");
        }
    }
}

fn config_error(json: &str) -> String {
    let cfg: LlamaConfig = serde_json::from_str(json).unwrap();
    cfg.validate().expect_err("config should be refused").to_string()
}

#[test]
fn llama_config_refuses_unknown_rope_scaling_and_activation() {
    let base = r#""hidden_size": 32, "num_attention_heads": 4"#;
    let e = config_error(&format!(
        r#"{{{base}, "rope_scaling": {{"rope_type": "yarn", "factor": 4.0}}}}"#
    ));
    assert!(e.contains("rope_scaling") && e.contains("yarn"), "{e}");
    let e = config_error(&format!(
        r#"{{{base}, "rope_scaling": {{"type": "dynamic", "factor": 2.0}}}}"#
    ));
    assert!(e.contains("rope_scaling") && e.contains("dynamic"), "{e}");
    let e = config_error(&format!(r#"{{{base}, "hidden_act": "gelu"}}"#));
    assert!(e.contains("hidden_act") && e.contains("gelu"), "{e}");
    let e = config_error(&format!(
        r#"{{{base}, "rope_scaling": {{"rope_type": "llama3", "factor": 8.0}}}}"#
    ));
    assert!(e.contains("rope_scaling.low_freq_factor"), "{e}");
    let e = config_error(&format!(r#"{{{base}, "num_key_value_heads": 3}}"#));
    assert!(e.contains("num_key_value_heads"), "{e}");

    // The legacy `type` key reads like `rope_type`; HF defaults fill the rest.
    let cfg: LlamaConfig = serde_json::from_str(&format!(
        r#"{{{base}, "rope_scaling": {{"type": "linear", "factor": 2.0}}}}"#
    ))
    .unwrap();
    cfg.validate().unwrap();
    assert_eq!(
        cfg.rope_scaling().unwrap(),
        qformer::llm::llama::RopeScaling::Linear { factor: 2.0 }
    );
    assert_eq!((cfg.num_key_value_heads(), cfg.head_dim(), cfg.rope_theta), (4, 8, 10000.0));
    assert!(!cfg.tie_word_embeddings && !cfg.attention_bias && !cfg.mlp_bias);
}
