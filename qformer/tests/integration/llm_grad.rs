//! Stage-two gradients: the frozen LLM passes gradient back to the soft prompt (Q-Former query
//! outputs) and to `language_projection`; checked against central finite differences in f64, so
//! an op that silently drops its gradient fails here.

use crate::llm_common::*;
use candle_core::{DType, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use qformer::llm::{prefix_lm_split, Blip2Llm, LanguageProjection};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Swap in a trainable `language_projection` initialised from the checkpoint.
fn trainable_projection(fx: &mut Fixture, varmap: &mut VarMap) {
    let dir =
        fixture_dir(if matches!(fx.model.language_model, qformer::llm::LanguageModel::Opt(_)) {
            "opt"
        } else {
            "t5"
        });
    let weights =
        candle_core::safetensors::load(dir.join("model.safetensors"), &test_device()).unwrap();
    let vb = VarBuilder::from_varmap(&*varmap, DType::F64, &test_device());
    fx.model.projection = LanguageProjection::new(
        fx.config.qformer_hidden_size,
        fx.config.llm_hidden_size(),
        vb.pp("language_projection"),
    )
    .unwrap();
    for name in ["language_projection.weight", "language_projection.bias"] {
        varmap.set_one(name, weights[name].to_dtype(DType::F64).unwrap()).unwrap();
    }
}

/// Directional derivative of `loss` along a fixed pseudo-random direction, by central differences,
/// vs the autograd gradient.
fn check_directional(loss: impl Fn(&Tensor) -> Tensor, q: &Var, grad: &Tensor) {
    let n = q.elem_count();
    let dir: Vec<f64> = (0..n).map(|i| ((i * 7919 % 113) as f64 / 56.0) - 1.0).collect();
    let dir = Tensor::from_vec(dir, q.shape(), &test_device()).unwrap();
    let h = 1e-5;
    let plus = loss(&(q.as_tensor() + (&dir * h).unwrap()).unwrap()).to_scalar::<f64>().unwrap();
    let minus = loss(&(q.as_tensor() - (&dir * h).unwrap()).unwrap()).to_scalar::<f64>().unwrap();
    let numeric = (plus - minus) / (2.0 * h);
    let analytic = (grad * &dir).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
    assert!(analytic.abs() > 1e-6, "gradient along the direction vanishes: {analytic}");
    let rel = (numeric - analytic).abs() / numeric.abs().max(1e-12);
    assert!(rel < 1e-4, "finite difference {numeric} vs autograd {analytic} (rel {rel})");
}

fn nonzero(t: &Tensor) -> bool {
    t.abs().unwrap().sum_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
        > 0.0
}

fn frozen_llm_has_no_trainable_weights(model: &Blip2Llm, varmap: &VarMap) {
    // Only the projection is a variable: the LLM is frozen (built from plain tensors).
    let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    assert!(names.iter().all(|n| n.starts_with("language_projection.")), "{names:?}");
    let _ = model;
}

#[test]
fn opt_lm_loss_gradient_reaches_soft_prompt_and_projection() {
    let mut fx = load("opt", DType::F64);
    let mut varmap = VarMap::new();
    trainable_projection(&mut fx, &mut varmap);
    let c = &fx.bridge["loss_case"];
    let images: Vec<usize> =
        c["images"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    let texts = id_rows(&c["token_ids"]);
    let prompt_lens: Vec<usize> =
        c["prompt_lens"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    let q = Var::from_tensor(&fx.query_outputs(&images).to_dtype(DType::F64).unwrap()).unwrap();
    let loss_at = |x: &Tensor| fx.model.opt_lm_loss(x, &texts, &prompt_lens).unwrap();
    let loss = loss_at(q.as_tensor());
    // f64 copy of the HF number: the f64 model must land on the same loss.
    let want = c["loss"].as_f64().unwrap();
    assert!((loss.to_scalar::<f64>().unwrap() - want).abs() < 1e-4);
    let grads = loss.backward().unwrap();
    let gq = grads.get(q.as_tensor()).expect("no gradient for the query outputs");
    assert!(nonzero(gq));
    let vars = varmap.all_vars();
    assert_eq!(vars.len(), 2);
    for v in &vars {
        let g = grads.get(v.as_tensor()).expect("no gradient for language_projection");
        assert!(nonzero(g), "zero gradient for a language_projection tensor");
    }
    frozen_llm_has_no_trainable_weights(&fx.model, &varmap);
    check_directional(loss_at, &q, gq);
}

#[test]
fn t5_prefix_lm_loss_gradient_reaches_soft_prompt_and_projection() {
    let mut fx = load("t5", DType::F64);
    let mut varmap = VarMap::new();
    trainable_projection(&mut fx, &mut varmap);
    let c = &fx.bridge["loss_case"];
    let images: Vec<usize> =
        c["images"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    // Captions without </s>: the prefix-LM split is drawn from a seeded RNG each call.
    let captions: Vec<Vec<u32>> = id_rows(&c["target_ids"])
        .into_iter()
        .zip(id_rows(&c["encoder_ids"]))
        .map(|(t, e)| e[..e.len() - 1].iter().chain(&t[..t.len() - 1]).copied().collect())
        .collect();
    let q = Var::from_tensor(&fx.query_outputs(&images).to_dtype(DType::F64).unwrap()).unwrap();
    let loss_at = |x: &Tensor| {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        fx.model.t5_prefix_lm_loss(x, &captions, &mut rng).unwrap()
    };
    let loss = loss_at(q.as_tensor());
    let grads = loss.backward().unwrap();
    let gq = grads.get(q.as_tensor()).expect("no gradient for the query outputs");
    assert!(nonzero(gq));
    for v in varmap.all_vars() {
        assert!(nonzero(grads.get(v.as_tensor()).expect("no gradient for language_projection")));
    }
    frozen_llm_has_no_trainable_weights(&fx.model, &varmap);
    check_directional(loss_at, &q, gq);
}

#[test]
fn prefix_lm_split_draws_every_point_between_one_and_the_midpoint() {
    let tokens: Vec<u32> = (10..21).collect(); // 11 tokens: split points 1..=5
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut seen = [false; 6];
    for _ in 0..500 {
        let (p, s) = prefix_lm_split(&tokens, &mut rng);
        assert!((1..=5).contains(&p.len()), "split at {}", p.len());
        assert_eq!([p.clone(), s].concat(), tokens);
        seen[p.len()] = true;
    }
    assert!(seen[1..].iter().all(|&x| x), "{seen:?}");
    // Same seed, same splits.
    let a = prefix_lm_split(&tokens, &mut ChaCha8Rng::seed_from_u64(3));
    let b = prefix_lm_split(&tokens, &mut ChaCha8Rng::seed_from_u64(3));
    assert_eq!(a, b);
    assert_eq!(prefix_lm_split(&[5], &mut rng), (vec![], vec![5]));
}

#[test]
fn all_ignored_labels_and_bad_configs_are_errors() {
    let logits = Tensor::zeros((2, 5), DType::F32, &test_device()).unwrap();
    assert!(qformer::llm::cross_entropy_ignore(&logits, &[-100, -100]).is_err());
    let err = qformer::llm::cross_entropy_ignore(&logits, &[7, -100]).unwrap_err().to_string();
    assert!(err.contains("label 7"), "{err}");
    // LLaMA is a supported text_config now; another family is still refused by name.
    let v = serde_json::json!({"text_config": {"model_type": "gpt_neox"}});
    let err = qformer::llm::Blip2LlmConfig::from_value(&v).unwrap_err().to_string();
    assert!(err.contains("gpt_neox"), "{err}");
    let v =
        serde_json::json!({"text_config": {"model_type": "opt", "activation_function": "swiglu"}});
    let err = qformer::llm::Blip2LlmConfig::from_value(&v).unwrap_err().to_string();
    assert!(err.contains("swiglu"), "{err}");
}
