//! FLAN-T5 bridge vs transformers 4.57.6 (`Blip2ForConditionalGeneration`, hf-tiny/t5 fixture):
//! decoder logits, losses and generated ids, from the recomputed Q-Former query outputs.

use crate::llm_common::*;
use candle_core::{DType, Tensor};
use qformer::llm::{generate, LanguageModel};

const TOL: f32 = 1e-4;

fn t5_case_inputs(fx: &Fixture, case: &serde_json::Value) -> (Tensor, Tensor) {
    let i = case["image"].as_u64().unwrap() as usize;
    let prompt = ids(&case["prompt_ids"]);
    let t = Tensor::from_vec(prompt.clone(), (1, prompt.len()), &test_device()).unwrap();
    fx.model.inputs_embeds(&fx.query_output(i, DType::F32), &t, &t.ones_like().unwrap()).unwrap()
}

#[test]
fn t5_decoder_logits_match_hf_for_every_image_and_prompt() {
    let fx = load("t5", DType::F32);
    let LanguageModel::T5(t5) = &fx.model.language_model else { panic!("expected T5") };
    for case in fx.expected["cases"].as_array().unwrap() {
        let (i, j) = (case["image"].as_u64().unwrap(), case["prompt"].as_u64().unwrap());
        let (embeds, mask) = t5_case_inputs(&fx, case);
        let d = max_abs_diff(
            &embeds.squeeze(0).unwrap(),
            &fx.bridge_tensors[&format!("inputs_embeds_{i}_{j}")],
        );
        assert!(d < TOL, "inputs_embeds {i}/{j}: max diff {d}");
        let dec = ids(&case["decoder_input_ids"]);
        let dec = Tensor::from_vec(dec.clone(), (1, dec.len()), &test_device()).unwrap();
        let logits = t5.forward(&embeds, &mask, &dec, None).unwrap().squeeze(0).unwrap();
        let d = max_abs_diff(&logits, &fx.expected_tensors[&format!("decoder_logits_{i}_{j}")]);
        assert!(d < TOL, "decoder logits image {i} prompt {j}: max diff {d}");
    }
}

#[test]
fn t5_cached_decoding_matches_full_decoder_pass() {
    let fx = load("t5", DType::F32);
    let LanguageModel::T5(t5) = &fx.model.language_model else { panic!("expected T5") };
    let case = &fx.expected["cases"][0];
    let (embeds, mask) = t5_case_inputs(&fx, case);
    let dec = ids(&case["decoder_input_ids"]);
    let enc = t5.encode(&embeds, &mask).unwrap();
    let mut cache = None;
    for (t, &tok) in dec.iter().enumerate() {
        let x = Tensor::from_vec(vec![tok], (1, 1), &test_device()).unwrap();
        let (logits, c) = t5.decode(&x, None, &enc, &mask, cache).unwrap();
        cache = Some(c);
        let want = fx.expected_tensors["decoder_logits_0_0"].get(t).unwrap();
        let d = max_abs_diff(&logits.squeeze(0).unwrap().squeeze(0).unwrap(), &want);
        assert!(d < TOL, "cached step {t}: max diff {d}");
    }
}

#[test]
fn t5_lm_loss_matches_hf_per_case() {
    let fx = load("t5", DType::F32);
    for case in fx.expected["cases"].as_array().unwrap() {
        let (i, j) = (case["image"].as_u64().unwrap(), case["prompt"].as_u64().unwrap());
        let loss = fx
            .model
            .t5_lm_loss(
                &fx.query_output(i as usize, DType::F32),
                &[ids(&case["prompt_ids"])],
                &[ids(&case["labels"])],
            )
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = case["loss"].as_f64().unwrap() as f32;
        assert!((loss - want).abs() < TOL, "loss image {i} prompt {j}: {loss} vs HF {want}");
    }
}

#[test]
fn t5_batched_padded_loss_matches_hf() {
    let fx = load("t5", DType::F32);
    let c = &fx.bridge["loss_case"];
    let images: Vec<usize> =
        c["images"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    let loss = fx
        .model
        .t5_lm_loss(
            &fx.query_outputs(&images),
            &id_rows(&c["encoder_ids"]),
            &id_rows(&c["target_ids"]),
        )
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let want = c["loss"].as_f64().unwrap() as f32;
    assert!((loss - want).abs() < TOL, "batched loss {loss} vs HF {want}");
}

#[test]
fn t5_greedy_and_beam_ids_match_hf() {
    let fx = load("t5", DType::F32);
    let base = gen_config(&serde_json::json!({"max_new_tokens": 6}), 1, 0);
    for case in fx.expected["cases"].as_array().unwrap() {
        let (i, j) = (case["image"].as_u64().unwrap(), case["prompt"].as_u64().unwrap());
        let (embeds, mask) = t5_case_inputs(&fx, case);
        for (key, beams) in [("greedy_ids", 1), ("beam3_ids", 3)] {
            let cfg = qformer::llm::GenerationConfig { num_beams: beams, ..base.clone() };
            let got = generate(&fx.model, &embeds, &mask, &cfg).unwrap();
            // Output includes the decoder start token, as HF returns it.
            let want = trim_after_eos(&ids(&case[key]), &cfg.eos_token_ids, 1);
            assert_eq!(got[0], want, "{key} image {i} prompt {j}");
        }
    }
}

#[test]
fn t5_batched_right_padded_generation_matches_hf() {
    let fx = load("t5", DType::F32);
    let nq = fx.config.num_query_tokens;
    for case in fx.bridge["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let images: Vec<usize> = case["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let full = id_rows(&case["input_ids"]);
        let mask = id_rows(&case["attention_mask"]);
        let prompts: Vec<Vec<u32>> = full
            .iter()
            .zip(&mask)
            .map(|(r, m)| {
                r.iter().zip(m).filter(|(_, &m)| m == 1).map(|(&t, _)| t).skip(nq).collect()
            })
            .collect();
        let (embeds, attn) = fx.model.prompt_inputs(&fx.query_outputs(&images), &prompts).unwrap();
        let cfg = gen_config(&case["settings"], 1, 0);
        let got = generate(&fx.model, &embeds, &attn, &cfg).unwrap();
        for (b, want) in id_rows(&case["output_ids"]).iter().enumerate() {
            let want = trim_after_eos(want, &cfg.eos_token_ids, 1);
            assert_eq!(got[b], want, "{name} row {b}");
        }
    }
}
