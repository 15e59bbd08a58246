//! `LlamaForCausalLm` vs HF transformers 4.57.6 `LlamaForCausalLM` (tests/fixtures/llama-tiny,
//! from tools/llama_fixture.py): logits, loss, gradients to every weight, config errors, the KV
//! cache against the uncached forward, greedy / 3-beam `generate` ids (`generate.json`), and the
//! BLIP-2 LM loss through LLaMA (`llama_lm_loss`).
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
use qformer::llm::{
    causal_lm_loss, generate, llama_lm_loss, GenerationConfig, LanguageProjection, LlamaConfig,
    LlamaForCausalLm, IGNORE_INDEX,
};

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

const CACHE_TOL: f32 = 1e-5;

fn load_model(c: &Case) -> LlamaForCausalLm {
    let vb = VarBuilder::from_tensors(c.weights.clone(), DType::F32, &test_device());
    LlamaForCausalLm::load(vb, &c.cfg).unwrap()
}

/// Feed `embeds` through the cache in chunks of `chunks` positions; the logits of every chunk,
/// concatenated. embeds: [B, L, H], mask: [B, L] -> [B, L, V]
fn cached_logits(
    model: &LlamaForCausalLm,
    embeds: &Tensor,
    mask: &Tensor,
    chunks: &[usize],
) -> Tensor {
    assert_eq!(chunks.iter().sum::<usize>(), embeds.dim(1).unwrap());
    let mut cache = None;
    let mut start = 0;
    let mut parts = Vec::new();
    for &n in chunks {
        let e = embeds.narrow(1, start, n).unwrap();
        let m = mask.narrow(1, 0, start + n).unwrap();
        let (logits, c) = model.forward_embeds_cached(&e, &m, cache).unwrap();
        assert_eq!(c.seq_len(), start + n);
        cache = Some(c);
        parts.push(logits);
        start += n;
    }
    Tensor::cat(&parts, 1).unwrap()
}

#[test]
fn llama_kv_cache_matches_uncached_forward() {
    for case in CASES {
        let c = load_case(case);
        let model = load_model(&c);
        let dev = test_device();
        let ids = ids(&c);
        let embeds = model.embed(&ids).unwrap();
        let (b, l) = ids.dims2().unwrap();

        // The fixture's batch: row 1 right-padded; every position compared.
        let mask = &c.expected["attention_mask"];
        let full = model.forward_embeds(&embeds, mask).unwrap();
        for chunks in [vec![3, 1, 1, 3], vec![1; l], vec![l]] {
            let inc = cached_logits(&model, &embeds, mask, &chunks);
            let d = max_abs_diff(&inc, &full);
            assert!(d <= CACHE_TOL, "{case} right-padded {chunks:?}: max diff {d:e}");
        }

        // Row 1 left-padded by 3: positions come from the mask cumsum over cached + new. Fully
        // padded query rows see a different set of (all masked) keys, so only real tokens count.
        let pads = 3;
        let mut m = vec![1u32; b * l];
        m[l..l + pads].iter_mut().for_each(|x| *x = 0);
        let mask = Tensor::from_vec(m, (b, l), &dev).unwrap();
        let full = model.forward_embeds(&embeds, &mask).unwrap();
        for chunks in [vec![4, 1, 1, 2], vec![1; l]] {
            let inc = cached_logits(&model, &embeds, &mask, &chunks);
            let mut d = max_abs_diff(&inc.get(0).unwrap(), &full.get(0).unwrap());
            let real = |x: &Tensor| x.get(1).unwrap().narrow(0, pads, l - pads).unwrap();
            d = d.max(max_abs_diff(&real(&inc), &real(&full)));
            assert!(d <= CACHE_TOL, "{case} left-padded {chunks:?}: max diff {d:e}");
        }
        // The uncached forward_embeds_at is the cached path with an empty cache.
        let pos = LlamaForCausalLm::positions_from_mask(&mask).unwrap();
        let at = model.forward_embeds_at(&embeds, &mask, &pos).unwrap();
        assert_eq!(max_abs_diff(&at, &full), 0.0, "{case}: forward_embeds_at vs forward_embeds");
    }
}

fn json_u32(v: &serde_json::Value) -> u32 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not an id")) as u32
}

fn json_rows(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(json_u32).collect())
        .collect()
}

/// `GenerationConfig` from the fields the fixture script wrote out.
fn gen_config(v: &serde_json::Value) -> GenerationConfig {
    assert_eq!(v["do_sample"], serde_json::Value::Bool(false));
    assert_eq!(v["early_stopping"], serde_json::Value::Bool(false));
    GenerationConfig {
        max_new_tokens: v["max_new_tokens"].as_u64().unwrap() as usize,
        min_new_tokens: 0,
        num_beams: v["num_beams"].as_u64().unwrap() as usize,
        length_penalty: v["length_penalty"].as_f64().unwrap(),
        repetition_penalty: 1.0,
        eos_token_ids: vec![json_u32(&v["eos_token_id"])],
        pad_token_id: json_u32(&v["pad_token_id"]),
        stop_sequences: Vec::new(),
    }
}

/// HF `sequences` rows -> the new tokens of each, up to and including the first EOS (what
/// follows is HF's fill: pad for greedy, `pad_token_id or eos` for beam search).
fn hf_new_tokens(seqs: &[Vec<u32>], prompt_len: usize, eos: u32) -> Vec<Vec<u32>> {
    seqs.iter()
        .map(|r| {
            let new = &r[prompt_len..];
            match new.iter().position(|&t| t == eos) {
                Some(i) => new[..=i].to_vec(),
                None => new.to_vec(),
            }
        })
        .collect()
}

#[test]
fn llama_greedy_and_beam_ids_match_hf_generate() {
    let dev = test_device();
    let mut hit_eos = false;
    for case in CASES {
        let c = load_case(case);
        let model = load_model(&c);
        let path = dir(case).join("generate.json");
        let g: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("generate.json")).unwrap();
        for prompt in ["single", "left_padded"] {
            let p = &g["prompts"][prompt];
            let input = json_rows(&p["input_ids"]);
            let mask = json_rows(&p["attention_mask"]);
            let (b, l) = (input.len(), input[0].len());
            let ids = Tensor::from_vec(input.concat(), (b, l), &dev).unwrap();
            let mask = Tensor::from_vec(mask.concat(), (b, l), &dev).unwrap();
            let embeds = model.embed(&ids).unwrap();
            for key in ["greedy", "beam3"] {
                let cfg = gen_config(&g["generation_config"][key]);
                let want = hf_new_tokens(&json_rows(&p[key]), l, cfg.eos_token_ids[0]);
                hit_eos |= want.iter().any(|r| r.last() == Some(&cfg.eos_token_ids[0]));
                let got = generate(&model, &embeds, &mask, &cfg).unwrap();
                assert_eq!(got, want, "{case} {prompt} {key}: ids vs HF generate");
                eprintln!("{case} {prompt} {key}: {got:?}");
            }
        }
    }
    assert!(hit_eos, "no HF reference stopped at EOS: the fixtures do not exercise it");
}

#[test]
fn llama_lm_loss_is_finite_and_reaches_the_queries() {
    let dev = test_device();
    let c = load_case("mha");
    let model = load_model(&c);
    let (qformer_hidden, num_queries) = (16, 4);
    let varmap = VarMap::new();
    let projection = LanguageProjection::new(
        qformer_hidden,
        c.cfg.hidden_size,
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
    )
    .unwrap();
    let queries = Var::randn(0f32, 1f32, (2, num_queries, qformer_hidden), &dev).unwrap();
    let (bos, eos) = (1u32, 2u32);
    // <s> + prompt + output + </s>, unpadded; prompt_lens cover <s> + prompt.
    let texts = vec![vec![bos, 11, 12, 40, 41, 42, eos], vec![bos, 13, 50, eos]];
    let prompt_lens = [3, 2];
    let loss =
        llama_lm_loss(&projection, &model, queries.as_tensor(), &texts, &prompt_lens).unwrap();
    let l = loss.to_scalar::<f32>().unwrap();
    assert!(l.is_finite() && l > 0.0, "loss {l}");

    // The same loss by hand: [queries; right-padded texts], labels on the outputs only.
    let proj = candle_core::Module::forward(&projection, queries.as_tensor()).unwrap();
    let width = texts[0].len();
    let mut ids = texts.clone();
    ids[1].resize(width, 0);
    let ids = Tensor::from_vec(ids.concat(), (2, width), &dev).unwrap();
    let mut m = vec![1u32; 2 * (num_queries + width)];
    let row1 = num_queries + width;
    m[row1 + num_queries + texts[1].len()..].iter_mut().for_each(|x| *x = 0);
    let mask = Tensor::from_vec(m, (2, num_queries + width), &dev).unwrap();
    let embeds = Tensor::cat(&[&proj, &model.embed(&ids).unwrap()], 1).unwrap();
    let logits = model.forward_embeds(&embeds, &mask).unwrap();
    let labels: Vec<Vec<i64>> = texts
        .iter()
        .zip(prompt_lens)
        .map(|(t, p)| {
            let mut row = vec![IGNORE_INDEX; num_queries + width];
            for (i, &tok) in t.iter().enumerate().skip(p) {
                row[num_queries + i] = tok as i64;
            }
            row
        })
        .collect();
    let want = causal_lm_loss(&logits, &labels).unwrap().to_scalar::<f32>().unwrap();
    assert!((l - want).abs() <= 1e-6, "llama_lm_loss {l} vs by hand {want}");

    let grads = loss.backward().unwrap();
    let g = grads.get(queries.as_tensor()).expect("no gradient reached the query input");
    let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
    assert!(g.iter().all(|x| x.is_finite()), "non-finite query gradient");
    assert!(g.iter().any(|&x| x != 0.0), "all-zero query gradient");
    for v in varmap.all_vars() {
        assert!(grads.get(v.as_tensor()).is_some(), "language_projection got no gradient");
    }

    // A text without the LLaMA tokenizer's <s> is refused.
    let e = llama_lm_loss(&projection, &model, queries.as_tensor(), &[vec![11, 12, eos]], &[1])
        .expect_err("no BOS")
        .to_string();
    assert!(e.contains("BOS"), "{e}");
}
