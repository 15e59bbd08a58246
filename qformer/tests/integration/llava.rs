//! `LlavaForConditionalGeneration` vs HF transformers 4.57.6 on tests/fixtures/llava-tiny (current
//! tensor names) and llava-tiny-oldnames (the same weights under the older Hub names, checked
//! against llava-tiny's `expected.*`), made by shared/tools/connector_fixtures.py: CLIP features
//! at `vision_feature_layer`, projector output, logits at every position and the loss; the count
//! mismatch and missing-tensor errors; and gradients reaching the projector `Var`s through the
//! frozen LLM.
//!
//! Reference positions: HF `forward` without `position_ids` (0..L-1), all-ones mask.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Tensor};
use candle_nn::{VarBuilder, VarMap};
use qformer::llava::{
    canonical_tensors, check_tensors, load_dir, FeatureSelectStrategy, LlavaConfig,
    LlavaForConditionalGeneration, NamingScheme, VisionFeatureLayer,
};
use qformer::llm::{causal_lm_loss, generate, GenerationConfig};

use crate::common::{max_abs_diff, test_device};

const TOL: f32 = 1e-4;
const LOSS_TOL: f32 = 1e-5;
const DIRS: [(&str, NamingScheme); 2] =
    [("llava-tiny", NamingScheme::Current), ("llava-tiny-oldnames", NamingScheme::Legacy)];

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

fn expected() -> (HashMap<String, Tensor>, serde_json::Value) {
    let d = dir("llava-tiny");
    let ts = candle_core::safetensors::load(d.join("expected.safetensors"), &test_device())
        .expect("expected.safetensors");
    let json = serde_json::from_str(
        &std::fs::read_to_string(d.join("expected.json")).expect("expected.json"),
    )
    .expect("expected.json parses");
    (ts, json)
}

fn model(name: &str) -> (LlavaForConditionalGeneration, NamingScheme) {
    let (cfg, scheme, tensors) = load_dir(dir(name), &test_device()).expect("load llava");
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &test_device());
    (LlavaForConditionalGeneration::load(vb, &cfg).expect("build llava"), scheme)
}

fn ids_row(t: &Tensor) -> Vec<i64> {
    t.to_dtype(DType::I64).unwrap().to_vec1::<i64>().unwrap()
}

fn ids_tensor(ids: &[i64]) -> Tensor {
    let v: Vec<u32> = ids.iter().map(|&x| x as u32).collect();
    Tensor::from_vec(v, (1, ids.len()), &test_device()).unwrap()
}

#[track_caller]
fn check(worst: &mut HashMap<&'static str, f32>, what: &'static str, got: &Tensor, want: &Tensor) {
    let d = max_abs_diff(got, want);
    assert!(d <= TOL, "{what}: max abs diff {d:e} > {TOL:e}");
    let w = worst.entry(what).or_insert(0.0);
    *w = w.max(d);
}

#[test]
fn llava_features_projector_logits_and_loss_match_hf_under_both_names() {
    let (exp, json) = expected();
    let pv = &exp["pixel_values"];
    let cases = json["cases"].as_array().expect("cases");
    for (name, want_scheme) in DIRS {
        let (m, scheme) = model(name);
        assert_eq!(scheme, want_scheme, "{name}: naming scheme");
        let mut worst = HashMap::new();

        let feats = m.vision_features(pv).unwrap();
        check(&mut worst, "vision_selected_features", &feats, &exp["vision_selected_features"]);
        let proj = m.image_features(pv).unwrap();
        check(&mut worst, "projector_output", &proj, &exp["projector_output"]);

        let mut loss_worst = 0f32;
        for c in cases {
            let (i, j) = (c["image"].as_u64().unwrap() as usize, c["prompt"].as_u64().unwrap());
            let ids = ids_row(&exp[&format!("input_ids_{i}_{j}")]);
            assert_eq!(ids.len() as u64, c["input_ids_len"].as_u64().unwrap());
            let image_i = pv.narrow(0, i, 1).unwrap();
            let logits = m.forward(&ids_tensor(&ids), Some(&image_i), None, None).unwrap();
            check(
                &mut worst,
                "logits",
                &logits.squeeze(0).unwrap(),
                &exp[&format!("logits_{i}_{j}")],
            );

            // Loss input = input_ids + answer_label_ids; labels -100 over the prompt.
            let labels = ids_row(&exp[&format!("labels_{i}_{j}")]);
            let answer: Vec<i64> = c["answer_label_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect();
            assert_eq!(&labels[ids.len()..], &answer[..]);
            let full: Vec<i64> = ids.iter().chain(&answer).copied().collect();
            let logits = m.forward(&ids_tensor(&full), Some(&image_i), None, None).unwrap();
            let loss = causal_lm_loss(&logits, &[labels]).unwrap().to_scalar::<f32>().unwrap();
            let want = c["loss"].as_f64().unwrap() as f32;
            let d = (loss - want).abs();
            assert!(d <= LOSS_TOL, "{name} case {i}/{j}: loss {loss} vs HF {want} (diff {d:e})");
            loss_worst = loss_worst.max(d);
        }
        let mut w: Vec<_> = worst.into_iter().collect();
        w.sort_by_key(|(k, _)| *k);
        eprintln!("{name}: max abs diffs {w:?}, loss {loss_worst:e}");
    }
}

/// All eight cases in one batch: four images, the features scattered row-major in image order.
#[test]
fn llava_batched_merge_matches_per_case_logits() {
    let (exp, json) = expected();
    let (m, _) = model("llava-tiny");
    let cases = json["cases"].as_array().unwrap();
    let feats = m.image_features(&exp["pixel_values"]).unwrap();
    let mut rows = Vec::new();
    let mut images = Vec::new();
    let mut want = Vec::new();
    for c in cases {
        let (i, j) = (c["image"].as_u64().unwrap() as u32, c["prompt"].as_u64().unwrap());
        rows.push(exp[&format!("input_ids_{i}_{j}")].to_dtype(DType::U32).unwrap());
        images.push(i);
        want.push(exp[&format!("logits_{i}_{j}")].clone());
    }
    let ids = Tensor::stack(&rows, 0).unwrap();
    let idx = Tensor::new(images.as_slice(), &test_device()).unwrap();
    let per_row = feats.index_select(&idx, 0).unwrap();
    let logits = m.forward_with_features(&ids, Some(&per_row), None, None).unwrap();
    let d = max_abs_diff(&logits, &Tensor::stack(&want, 0).unwrap());
    eprintln!("batched logits: max abs diff {d:e}");
    assert!(d <= TOL, "batched logits: max abs diff {d:e}");
}

#[test]
fn llava_image_token_count_mismatch_names_both_counts() {
    let (exp, _) = expected();
    let (m, _) = model("llava-tiny");
    let ids = exp["input_ids_0_0"].to_dtype(DType::U32).unwrap().unsqueeze(0).unwrap();
    let two = exp["pixel_values"].narrow(0, 0, 2).unwrap();
    let err = m.forward(&ids, Some(&two), None, None).unwrap_err().to_string();
    assert!(err.contains("16 image tokens") && err.contains("32 image feature rows"), "{err}");
    let err = m.forward(&ids, None, None, None).unwrap_err().to_string();
    assert!(err.contains("16 image tokens") && err.contains("0 image feature rows"), "{err}");
}

#[test]
fn llava_missing_tensor_is_named_in_the_files_scheme() {
    for (name, _) in DIRS {
        let d = dir(name);
        let cfg = LlavaConfig::from_file(d.join("config.json")).unwrap();
        let mut raw =
            candle_core::safetensors::load(d.join("model.safetensors"), &test_device()).unwrap();
        let victim = raw
            .keys()
            .find(|k| k.ends_with("encoder.layers.1.mlp.fc1.bias"))
            .expect("fc1 bias")
            .clone();
        raw.remove(&victim);
        let (scheme, tensors) = canonical_tensors(raw).unwrap();
        let err = check_tensors(&cfg, scheme, &tensors).unwrap_err().to_string();
        assert!(err.contains(&format!("missing tensor {victim}")), "{name}: {err}");
        assert!(
            err.contains("vision_tower.vision_model.encoder.layers.1.mlp.fc1.bias"),
            "{name}: {err}"
        );
    }
    // A file that mixes the two schemes.
    let mut mixed =
        candle_core::safetensors::load(dir("llava-tiny").join("model.safetensors"), &test_device())
            .unwrap();
    let t = mixed.remove("lm_head.weight").unwrap();
    mixed.insert("language_model.lm_head.weight".into(), t);
    let err = canonical_tensors(mixed).unwrap_err().to_string();
    assert!(err.contains("mixes"), "{err}");
}

/// Strategy `full` keeps the class token; a list of layers concatenates on the feature axis;
/// layer 0 is the `pre_layrnorm` output (HF `hidden_states[0]`), and the last one the tower output.
#[test]
fn llava_feature_layer_list_and_full_strategy_select_like_hf() {
    let (exp, _) = expected();
    let d = dir("llava-tiny");
    let (cfg, _, tensors) = load_dir(&d, &test_device()).unwrap();
    let pv = &exp["pixel_values"];
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &test_device());
    let base = LlavaForConditionalGeneration::load(vb.clone(), &cfg).unwrap();
    let n = cfg.vision_config.num_hidden_layers as i64;

    let mut full_cfg = cfg.clone();
    full_cfg.vision_feature_select_strategy = FeatureSelectStrategy::Full;
    let full = LlavaForConditionalGeneration::load(vb.clone(), &full_cfg).unwrap();
    let f = full.vision_features(pv).unwrap();
    assert_eq!(f.dim(1).unwrap(), cfg.vision_config.num_positions());
    let default = base.vision_features(pv).unwrap();
    assert!(max_abs_diff(&default, &exp["vision_selected_features"]) <= TOL);
    let tail = f.narrow(1, 1, f.dim(1).unwrap() - 1).unwrap();
    assert_eq!(max_abs_diff(&tail, &default), 0.0);

    // [-2, n] = [layer -2, the last layer]: the projector input doubles (projector not built
    // from the file's weights here, only the tower is compared).
    let mut list_cfg = cfg.clone();
    list_cfg.vision_feature_layer = VisionFeatureLayer::Many(vec![-2, n]);
    let h = cfg.vision_config.hidden_size;
    assert_eq!(list_cfg.projector_in_dim(), 2 * h);
    let hs = base.vision_tower().hidden_states(pv, n as usize).unwrap();
    assert_eq!(hs.len(), n as usize + 1);
    let last = base.vision_tower().forward(pv).unwrap();
    assert_eq!(max_abs_diff(&hs[n as usize], &last), 0.0);
    let picked = hs[n as usize - 1].narrow(1, 1, 16).unwrap();
    assert_eq!(max_abs_diff(&picked, &default), 0.0);
    assert_eq!(list_cfg.feature_layers().unwrap(), vec![n as usize - 1, n as usize]);

    let mut bad = cfg.clone();
    bad.vision_feature_layer = VisionFeatureLayer::One(-(n + 2));
    assert!(bad.validate().unwrap_err().to_string().contains("out of range"));
}

/// Projector weights as `Var`s, tower and LLM as constants: the answer loss reaches all four
/// projector tensors (finite, non-zero), and a step along the gradient changes the loss by
/// about |g|² × step (central difference).
#[test]
fn llava_projector_vars_get_gradients_through_the_frozen_llm() {
    let (exp, json) = expected();
    let (cfg, _, tensors) = load_dir(dir("llava-tiny"), &test_device()).unwrap();
    let varmap = VarMap::new();
    let m =
        LlavaForConditionalGeneration::with_trainable_projector(&cfg, &tensors, &varmap).unwrap();
    let c = &json["cases"][0];
    let ids = ids_row(&exp["input_ids_0_0"]);
    let labels = ids_row(&exp["labels_0_0"]);
    let answer: Vec<i64> =
        c["answer_label_ids"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    let full: Vec<i64> = ids.iter().chain(&answer).copied().collect();
    let pv = exp["pixel_values"].narrow(0, 0, 1).unwrap();
    let loss_fn = |m: &LlavaForConditionalGeneration| {
        let logits = m.forward(&ids_tensor(&full), Some(&pv), None, None).unwrap();
        causal_lm_loss(&logits, std::slice::from_ref(&labels)).unwrap()
    };
    let loss = loss_fn(&m);
    let hf = c["loss"].as_f64().unwrap() as f32;
    assert!((loss.to_scalar::<f32>().unwrap() - hf).abs() <= LOSS_TOL);
    let grads = loss.backward().unwrap();

    let vars = varmap.all_vars();
    assert_eq!(vars.len(), 4, "projector linear_1/linear_2 weight + bias");
    let mut sq = 0f64;
    let named = varmap.data().lock().unwrap().clone();
    let mut names: Vec<_> = named.keys().cloned().collect();
    names.sort();
    for name in &names {
        let v = &named[name];
        let g = grads.get(v.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
        let n2 = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!(n2.is_finite() && n2 > 0.0, "{name}: |grad|² = {n2}");
        eprintln!("{name}: |grad| = {:.4e}", n2.sqrt());
        sq += n2;
    }
    // Frozen parts are constants: nothing flows into them.
    for name in ["vision_tower.vision_model.pre_layrnorm.weight", "language_model.lm_head.weight"] {
        assert!(grads.get(&tensors[name]).is_none(), "{name} should get no gradient");
    }

    // Directional finite difference along the gradient (loss(w ± eps g)).
    let eps = 1e-3 / sq.sqrt();
    let originals: Vec<Tensor> =
        names.iter().map(|n| named[n].as_tensor().copy().unwrap()).collect();
    let at = |sign: f64| -> f64 {
        for (n, w0) in names.iter().zip(&originals) {
            let v = &named[n];
            let g = grads.get(v.as_tensor()).unwrap();
            v.set(&(w0 + (g * (sign * eps)).unwrap()).unwrap()).unwrap();
        }
        loss_fn(&m).to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    };
    let (up, down) = (at(1.0), at(-1.0));
    let fd = (up - down) / (2.0 * eps);
    let rel = (fd - sq).abs() / sq;
    eprintln!(
        "directional derivative: finite difference {fd:.6e} vs |g|² {sq:.6e} (rel {rel:.2e})"
    );
    assert!(rel < 2e-2, "finite difference {fd} vs |g|² {sq}");
}

/// Greedy and 3-beam generation through the shared decoder over the merged embeddings: the new
/// ids equal HF `generate`'s token for token (6 new tokens, EOS 2), for every case.
#[test]
fn llava_greedy_and_beam_ids_match_hf_generate() {
    let (exp, json) = expected();
    let pv = &exp["pixel_values"];
    let (m, _) = model(DIRS[0].0);
    let ids_of = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    };
    let max_new = json["generation"]["max_new_tokens"].as_u64().unwrap() as usize;
    let eos = json["generation"]["eos_token_id"].as_u64().unwrap() as u32;
    for c in json["cases"].as_array().unwrap() {
        let (i, j) = (c["image"].as_u64().unwrap() as usize, c["prompt"].as_u64().unwrap());
        let ids = ids_tensor(&ids_row(&exp[&format!("input_ids_{i}_{j}")]));
        let feats = m.image_features(&pv.narrow(0, i, 1).unwrap()).unwrap();
        let embeds = m.merge_image_features(&ids, &feats).unwrap();
        let mask = Tensor::ones(ids.dims(), DType::U32, ids.device()).unwrap();
        for (beams, key) in [(1, "greedy_ids"), (3, "beam3_ids")] {
            let cfg = GenerationConfig {
                max_new_tokens: max_new,
                num_beams: beams,
                eos_token_ids: vec![eos],
                pad_token_id: 0,
                ..Default::default()
            };
            let got = generate(m.language_model(), &embeds, &mask, &cfg).unwrap();
            let mut got = got[0].clone();
            let want = ids_of(&c[key]);
            got.truncate(want.len());
            assert_eq!(got, want, "case {i}/{j} {key}");
        }
    }
}

/// The original haotian-liu layout of the same weights (llava-tiny-original, the tower in
/// llava-tiny-clip, made by tools/llava_original_fixtures.py) loads into the same model: HF's
/// features and projector output; and a tower whose width differs from
/// `mm_hidden_size` is refused naming both.
#[test]
fn llava_original_layout_matches_hf() {
    use qformer::llava::original::{load_original_dir, OriginalLlavaConfig};
    let (exp, _) = expected();
    let d = load_original_dir(&dir("llava-tiny-original"), None, &test_device()).expect("load");
    assert!(d.tower_dir.ends_with("llava-tiny-clip"), "{}", d.tower_dir.display());
    assert_eq!(d.config.llava.projector_depth, 2);
    assert_eq!(d.config.llava.tokens_per_image(), 16);
    let vb = VarBuilder::from_tensors(d.tensors, DType::F32, &test_device());
    let m = LlavaForConditionalGeneration::load(vb, &d.config.llava).expect("build");
    let pv = &exp["pixel_values"];
    let feats = m.vision_features(pv).unwrap();
    assert!(max_abs_diff(&feats, &exp["vision_selected_features"]) <= TOL);
    let proj = m.image_features(pv).unwrap();
    assert!(max_abs_diff(&proj, &exp["projector_output"]) <= TOL);

    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir("llava-tiny-original/config.json")).unwrap(),
    )
    .unwrap();
    let tower: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir("llava-tiny-clip/config.json")).unwrap())
            .unwrap();
    cfg["mm_hidden_size"] = 48.into();
    let e = OriginalLlavaConfig::from_json(cfg, &tower).unwrap_err().to_string();
    assert!(e.contains("mm_hidden_size 48") && e.contains("hidden_size 32"), "{e}");
}
