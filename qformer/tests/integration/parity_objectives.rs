//! Stage-one losses against the ORIGINAL LAVIS 1.0.2 `Blip2Qformer.forward` on the tiny fixture
//! (tests/fixtures/hf-tiny/itm/expected_losses.{json,safetensors}, made by
//! `tools/lavis_losses.py` with hardest-negative selection, dropout 0, eval mode).

use crate::common::{self, assert_close, get, lavis_stage1_model, load_tensors, test_device};
use candle_core::Tensor;
use qformer::masks::PaddingMask;
use qformer::model::ImageInput;
use qformer::objectives::cross_entropy::cross_entropy_per_row;
use qformer::objectives::{
    itc_loss, itg_inputs, stage_one_losses, CeOpts, ItcTargets, NegativeMode, ObjectiveConfig,
    PretrainBatch,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const ATOL: f32 = 1e-4;
const BOS: u32 = 183; // [DEC] in the fixture tokenizer (expected_losses.json settings.bos_token_id)

fn cfg() -> ObjectiveConfig {
    ObjectiveConfig {
        negatives: NegativeMode::Hardest,
        bos_token_id: BOS,
        pad_token_id: 0,
        ..Default::default()
    }
}

fn to_usize(t: &Tensor) -> Vec<usize> {
    t.to_vec1::<i64>().unwrap().into_iter().map(|x| x as usize).collect()
}

#[test]
fn stage_one_losses_match_lavis() {
    let loaded = lavis_stage1_model(None);
    let m = &loaded.model;
    let e = load_tensors("itm/expected_losses.safetensors");
    let mask = PaddingMask::from_tensor(get(&e, "text_attention_mask")).unwrap();
    let batch = PretrainBatch {
        image: ImageInput::Pixels(get(&e, "pixel_values")),
        input_ids: get(&e, "text_input_ids"),
        attention_mask: &mask,
        image_ids: None,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let out = stage_one_losses(m, &batch, &cfg(), false, &mut rng).unwrap();

    // SelectedNegatives exactly, weights closely.
    assert_eq!(out.negatives.image_for_text, to_usize(get(&e, "neg_image_idx_for_text")));
    assert_eq!(out.negatives.text_for_image, to_usize(get(&e, "neg_text_idx_for_image")));
    let w = |v: &Vec<Vec<f32>>| Tensor::new(v.clone(), &test_device()).unwrap();
    assert_close("weights_t2i", &w(&out.negatives.weights_t2i), get(&e, "weights_t2i"), ATOL);
    assert_close("weights_i2t", &w(&out.negatives.weights_i2t), get(&e, "weights_i2t"), ATOL);
    assert_eq!(out.negatives.labels(), get(&e, "itm_labels").to_vec1::<i64>().unwrap());

    assert_close("sim_i2t", &out.itc_out.sim_i2t, get(&e, "sim_i2t"), ATOL);
    assert_close("sim_t2i", &out.itc_out.sim_t2i, get(&e, "sim_t2i"), ATOL);
    assert_close("itm_logits", &out.itm_logits, get(&e, "itm_logits"), ATOL);
    assert_close("itg_logits", &out.itg_logits, get(&e, "itg_logits"), ATOL);

    // ITG inputs exactly as LAVIS builds them.
    let itg_in = itg_inputs(batch.input_ids, BOS, 0).unwrap();
    assert_eq!(
        itg_in
            .decoder_input_ids
            .to_dtype(candle_core::DType::I64)
            .unwrap()
            .to_vec2::<i64>()
            .unwrap(),
        get(&e, "itg_decoder_input_ids").to_vec2::<i64>().unwrap()
    );
    assert_eq!(itg_in.labels, get(&e, "itg_labels").to_vec2::<i64>().unwrap());
    // Per-token ITG losses (LAVIS reduction='none' view).
    let (b, l, v) = out.itg_logits.dims3().unwrap();
    let shifted = out.itg_logits.narrow(1, 0, l - 1).unwrap().reshape((b * (l - 1), v)).unwrap();
    let targets: Vec<i64> = itg_in.labels.iter().flat_map(|r| r[1..].to_vec()).collect();
    let per_tok =
        cross_entropy_per_row(&shifted, &targets, CeOpts { label_smoothing: 0.1 }).unwrap();
    assert_close(
        "itg_token_loss",
        &per_tok.reshape((b, l - 1)).unwrap(),
        get(&e, "itg_token_loss"),
        ATOL,
    );

    let losses = Tensor::stack(&[&out.itc, &out.itm, &out.itg, &out.total], 0).unwrap();
    assert_close("losses [itc, itm, itg, total]", &losses, get(&e, "losses"), ATOL);
}

#[test]
fn stage_one_losses_match_lavis_with_hf_eps() {
    let loaded = lavis_stage1_model(Some(1e-6));
    let e = load_tensors("itm/expected_losses.safetensors");
    let mask = PaddingMask::from_tensor(get(&e, "text_attention_mask")).unwrap();
    let batch = PretrainBatch {
        image: ImageInput::Pixels(get(&e, "pixel_values")),
        input_ids: get(&e, "text_input_ids"),
        attention_mask: &mask,
        image_ids: None,
    };
    let out =
        stage_one_losses(&loaded.model, &batch, &cfg(), false, &mut ChaCha8Rng::seed_from_u64(0))
            .unwrap();
    let losses = Tensor::stack(&[&out.itc, &out.itm, &out.itg, &out.total], 0).unwrap();
    assert_close("hfeps.losses", &losses, get(&e, "hfeps.losses"), ATOL);
    assert_close("hfeps.itm_logits", &out.itm_logits, get(&e, "hfeps.itm_logits"), ATOL);
    assert_close(
        "hfeps.itg_logits_sample0",
        &out.itg_logits.get(0).unwrap(),
        get(&e, "hfeps.itg_logits_sample0"),
        ATOL,
    );
}

#[test]
fn gradients_reach_every_trainable_part_and_itg_reaches_cross_attention() {
    let loaded = lavis_stage1_model(None);
    let m = &loaded.model;
    let vars = loaded.varmap.as_ref().unwrap().data().lock().unwrap().clone();
    let e = load_tensors("itm/expected_losses.safetensors");
    let mask = PaddingMask::from_tensor(get(&e, "text_attention_mask")).unwrap();
    let batch = PretrainBatch {
        image: ImageInput::Pixels(get(&e, "pixel_values")),
        input_ids: get(&e, "text_input_ids"),
        attention_mask: &mask,
        image_ids: None,
    };
    let out = stage_one_losses(m, &batch, &cfg(), true, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
    let norm = |g: Option<&Tensor>| {
        g.map(|g| g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()).unwrap_or(0.0)
    };

    let grads = out.total.backward().unwrap();
    for name in [
        "query_tokens",
        "vision_model.post_layernorm.weight",
        "temp",
        "cls.predictions.bias",
        "cls.predictions.transform.LayerNorm.weight",
        "qformer.layernorm.weight",
        "embeddings.word_embeddings.weight",
        "vision_projection.weight",
        "text_projection.weight",
        "itm_head.weight",
        "qformer.encoder.layer.2.output.LayerNorm.weight",
    ] {
        assert!(norm(grads.get(&vars[name])) > 0.0, "no gradient for {name}");
    }
    // The ITG loss alone reaches the query path through the (not detached) cached query K/V.
    let lm_grads = out.itg.backward().unwrap();
    for name in [
        "qformer.encoder.layer.0.crossattention.attention.query.weight",
        "query_tokens",
        "vision_model.post_layernorm.bias",
    ] {
        assert!(norm(lm_grads.get(&vars[name])) > 0.0, "ITG gives no gradient to {name}");
    }
}

#[test]
fn itc_with_distinct_image_ids_equals_diagonal_targets() {
    let img = Tensor::randn(0f32, 1., (3, 2, 4), &test_device()).unwrap();
    let img = qformer::model::l2_normalize(&img).unwrap();
    let txt =
        qformer::model::l2_normalize(&Tensor::randn(0f32, 1., (3, 4), &test_device()).unwrap())
            .unwrap();
    let temp = Tensor::new(0.07f32, &test_device()).unwrap();
    let a =
        itc_loss(&img, &txt, &temp, ItcTargets::Diagonal).unwrap().loss.to_scalar::<f32>().unwrap();
    let b = itc_loss(&img, &txt, &temp, ItcTargets::ImageIds(&[5, 9, 2]))
        .unwrap()
        .loss
        .to_scalar::<f32>()
        .unwrap();
    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    // Two texts of the same image: the target mass is split between them, so the loss changes.
    let c = itc_loss(&img, &txt, &temp, ItcTargets::ImageIds(&[5, 5, 2]))
        .unwrap()
        .loss
        .to_scalar::<f32>()
        .unwrap();
    assert!((a - c).abs() > 1e-4);
}

#[test]
fn gradients_match_lavis() {
    // tests/fixtures/hf-tiny/itm/stage1_grads.safetensors: d loss / d param of LAVIS 1.0.2
    // (tools/lavis_stage1_reference.py), keys "<itc|itm|itg|total>/<LAVIS name>".
    let loaded = lavis_stage1_model(None);
    let m = &loaded.model;
    let vars = loaded.varmap.as_ref().unwrap().data().lock().unwrap().clone();
    let e = load_tensors("itm/expected_losses.safetensors");
    let want = load_tensors("itm/stage1_grads.safetensors");
    let mask = PaddingMask::from_tensor(get(&e, "text_attention_mask")).unwrap();
    let batch = PretrainBatch {
        image: ImageInput::Pixels(get(&e, "pixel_values")),
        input_ids: get(&e, "text_input_ids"),
        attention_mask: &mask,
        image_ids: None,
    };
    let out = stage_one_losses(m, &batch, &cfg(), true, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
    let mut worst = 0f32;
    let mut checked = 0;
    for (loss_name, loss) in
        [("itc", &out.itc), ("itm", &out.itm), ("itg", &out.itg), ("total", &out.total)]
    {
        let grads = loss.backward().unwrap();
        for (key, expected) in want.iter().filter(|(k, _)| k.starts_with(&format!("{loss_name}/")))
        {
            let lavis_name = &key[loss_name.len() + 1..];
            let canonical = qformer::weights::names::lavis_to_canonical(lavis_name).unwrap();
            let var = vars.get(&canonical).unwrap_or_else(|| panic!("no Var {canonical}"));
            let got = match grads.get(var) {
                Some(g) => g.clone(),
                None => var.zeros_like().unwrap(),
            };
            // Relative to the gradient's own scale, so tiny and large gradients are held alike.
            let scale =
                expected.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-3);
            let d = common::max_abs_diff(&got, expected) / scale;
            assert!(d < 1e-3, "{key}: max abs diff / max |grad| = {d:e} (scale {scale:e})");
            worst = worst.max(d);
            checked += 1;
        }
    }
    assert_eq!(checked, want.len());
    eprintln!("{checked} gradients, worst relative diff {worst:e}");
}
