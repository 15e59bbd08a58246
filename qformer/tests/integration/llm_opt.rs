//! OPT bridge vs transformers 4.57.6 (`Blip2ForConditionalGeneration`, hf-tiny/opt fixture):
//! logits, losses and generated ids, from the recomputed Q-Former query outputs.

use crate::llm_common::*;
use candle_core::{DType, Tensor};
use qformer::llm::{generate_with_history, LanguageModel};

const TOL: f32 = 1e-4;

fn opt_case_inputs(fx: &Fixture, case: &serde_json::Value) -> (Tensor, Tensor, Vec<u32>) {
    let i = case["image"].as_u64().unwrap() as usize;
    let prompt = ids(&case["prompt_ids"]);
    let dev = test_device();
    let t = Tensor::from_vec(prompt.clone(), (1, prompt.len()), &dev).unwrap();
    let (embeds, mask) = fx
        .model
        .inputs_embeds(&fx.query_output(i, DType::F32), &t, &t.ones_like().unwrap())
        .unwrap();
    // HF's repetition penalty sees the <image> ids and the prompt ids.
    let image = fx.config.image_token_index.unwrap();
    let mut history = vec![image; fx.config.num_query_tokens];
    history.extend(prompt);
    (embeds, mask, history)
}

#[test]
fn opt_logits_and_inputs_match_hf_for_every_image_and_prompt() {
    let fx = load("opt", DType::F32);
    let LanguageModel::Opt(opt) = &fx.model.language_model else { panic!("expected OPT") };
    let nq = fx.config.num_query_tokens;
    for case in fx.expected["cases"].as_array().unwrap() {
        let (i, j) = (case["image"].as_u64().unwrap(), case["prompt"].as_u64().unwrap());
        let (embeds, mask, _) = opt_case_inputs(&fx, case);
        let want_embeds = &fx.bridge_tensors[&format!("inputs_embeds_{i}_{j}")];
        let d = max_abs_diff(&embeds.squeeze(0).unwrap(), want_embeds);
        assert!(d < TOL, "inputs_embeds {i}/{j}: max diff {d}");
        let (logits, _) = opt.forward_embeds(&embeds, &mask, None).unwrap();
        let l = logits.dim(1).unwrap();
        let got = logits.squeeze(0).unwrap().narrow(0, nq, l - nq).unwrap();
        let d = max_abs_diff(&got, &fx.expected_tensors[&format!("logits_{i}_{j}")]);
        assert!(d < TOL, "logits image {i} prompt {j}: max diff {d}");
    }
}

#[test]
fn opt_left_padded_batch_logits_match_hf() {
    let fx = load("opt", DType::F32);
    let LanguageModel::Opt(opt) = &fx.model.language_model else { panic!("expected OPT") };
    // HF layout [pads][<image>*Q][prompt]: the Rust model takes the same embeddings and mask.
    let embeds = &fx.bridge_tensors["batch_inputs_embeds"];
    let mask = &fx.bridge_tensors["batch_attention_mask"];
    let (logits, _) = opt.forward_embeds(embeds, mask, None).unwrap();
    let want = &fx.bridge_tensors["batch_logits"];
    let m = mask.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
    for (b, row) in m.iter().enumerate() {
        for (t, &keep) in row.iter().enumerate() {
            if keep == 0.0 {
                continue; // padded query rows are never used
            }
            let d = max_abs_diff(
                &logits.get(b).unwrap().get(t).unwrap(),
                &want.get(b).unwrap().get(t).unwrap(),
            );
            assert!(d < TOL, "batch row {b} position {t}: max diff {d}");
        }
    }
}

#[test]
fn opt_lm_loss_matches_hf_per_case() {
    let fx = load("opt", DType::F32);
    for case in fx.expected["cases"].as_array().unwrap() {
        let (i, j) = (case["image"].as_u64().unwrap(), case["prompt"].as_u64().unwrap());
        let text: Vec<u32> = fx.bridge_tensors[&format!("loss_ids_{i}_{j}")]
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|x| x as u32)
            .collect();
        let prompt_len = case["prompt_ids"].as_array().unwrap().len();
        let loss = fx
            .model
            .opt_lm_loss(&fx.query_output(i as usize, DType::F32), &[text], &[prompt_len])
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = case["loss"].as_f64().unwrap() as f32;
        assert!((loss - want).abs() < TOL, "loss image {i} prompt {j}: {loss} vs HF {want}");
    }
}

#[test]
fn opt_batched_right_padded_loss_matches_hf() {
    let fx = load("opt", DType::F32);
    let c = &fx.bridge["loss_case"];
    let images: Vec<usize> =
        c["images"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    let texts = id_rows(&c["token_ids"]);
    let prompt_lens: Vec<usize> =
        c["prompt_lens"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    let loss = fx.model.opt_lm_loss(&fx.query_outputs(&images), &texts, &prompt_lens).unwrap();
    let loss = loss.to_scalar::<f32>().unwrap();
    let want = c["loss"].as_f64().unwrap() as f32;
    assert!((loss - want).abs() < TOL, "batched loss {loss} vs HF {want}");
}

#[test]
fn opt_greedy_and_beam_ids_match_hf() {
    let fx = load("opt", DType::F32);
    let base = gen_config(&serde_json::json!({"max_new_tokens": 6, "min_new_tokens": 1}), 2, 1);
    for case in fx.expected["cases"].as_array().unwrap() {
        let (i, j) = (case["image"].as_u64().unwrap(), case["prompt"].as_u64().unwrap());
        let (embeds, mask, history) = opt_case_inputs(&fx, case);
        for (key, beams) in [("greedy_ids", 1), ("beam3_ids", 3)] {
            let cfg = qformer::llm::GenerationConfig { num_beams: beams, ..base.clone() };
            let got = generate_with_history(
                &fx.model,
                &embeds,
                &mask,
                Some(std::slice::from_ref(&history)),
                &cfg,
            )
            .unwrap();
            let want = trim_after_eos(&ids(&case[key]), &cfg.eos_token_ids, 0);
            assert_eq!(got[0], want, "{key} image {i} prompt {j}");
        }
    }
}

#[test]
fn opt_batched_left_padded_generation_matches_hf() {
    let fx = load("opt", DType::F32);
    let image = fx.config.image_token_index.unwrap();
    let nq = fx.config.num_query_tokens;
    for case in fx.bridge["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let images: Vec<usize> = case["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        // Unpadded prompts (BOS + prompt) from HF's left-padded <image>*Q + prompt rows.
        let full = id_rows(&case["input_ids"]);
        let mask = id_rows(&case["attention_mask"]);
        let prompts: Vec<Vec<u32>> = full
            .iter()
            .zip(&mask)
            .map(|(r, m)| {
                r.iter().zip(m).filter(|(_, &m)| m == 1).map(|(&t, _)| t).skip(nq).collect()
            })
            .collect();
        assert!(full.iter().all(|r| r.contains(&image)));
        let (embeds, attn) = fx.model.prompt_inputs(&fx.query_outputs(&images), &prompts).unwrap();
        let cfg = gen_config(&case["settings"], 2, 1);
        let got = generate_with_history(&fx.model, &embeds, &attn, Some(&full), &cfg).unwrap();
        for (b, want) in id_rows(&case["output_ids"]).iter().enumerate() {
            let want = trim_after_eos(want, &cfg.eos_token_ids, 0);
            assert_eq!(got[b], want, "{name} row {b}");
        }
    }
}
