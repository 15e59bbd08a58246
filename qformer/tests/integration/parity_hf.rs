//! Forward parity with HF transformers 4.57.6 on the tiny fixtures (tests/fixtures/hf-tiny):
//! vision tower, Q-Former, projections, ITC and ITM of `itm/` (Blip2ForImageTextRetrieval),
//! and vision + Q-Former of the `opt/` and `t5/` Blip2ForConditionalGeneration checkpoints
//! (reference numbers recorded by running HF transformers 4.57.6 on these checkpoints; the
//! vision and Q-Former outputs of `opt/` and `t5/` by `tools/qformer_outputs.py`).

use crate::common::{self, assert_close, fixture, get, load_tensors, test_device};
use candle_core::Tensor;
use qformer::masks::PaddingMask;
use qformer::model::{itc_similarity, ImageInput};
use qformer::weights::{load_hf_dir, LoadOptions};

const ATOL: f32 = 1e-4;

fn opts(trainable: bool) -> LoadOptions {
    LoadOptions { trainable, device: test_device(), ..Default::default() }
}

fn check_itm(trainable: bool) {
    let loaded = load_hf_dir(fixture("itm"), &opts(trainable)).unwrap();
    let m = &loaded.model;
    assert_eq!(loaded.varmap.is_some(), trainable);
    assert!(m.lm_head().is_none(), "HF retrieval checkpoints have no LM head");
    assert_eq!(loaded.report.defaulted, vec!["temp = 0.07".to_string()]);
    let e = load_tensors("itm/expected.safetensors");
    let pixels = get(&e, "pixel_values");

    let image = m.encode_image(ImageInput::Pixels(pixels)).unwrap();
    assert_close(
        "vision last_hidden_state",
        &image.image_embeds,
        get(&e, "vision_last_hidden_state"),
        ATOL,
    );
    assert_close("query_output", &image.query_output, get(&e, "query_output"), ATOL);
    let image_feats = image.image_feats.clone().unwrap();
    assert_close("image_embeds", &image_feats, get(&e, "image_embeds"), ATOL);

    let ids = get(&e, "input_ids");
    let padding = PaddingMask::from_tensor(get(&e, "attention_mask")).unwrap();
    let text = m.encode_text(ids, &padding).unwrap();
    assert_close("text_embeds", &text.text_feat, get(&e, "text_embeds"), ATOL);

    let itc = itc_similarity(&image_feats, &text.text_feat).unwrap();
    assert_close("itc logits_per_image", &itc, get(&e, "itc_logits_per_image"), ATOL);

    // ITM: every image against all five texts.
    let want = get(&e, "itm_logits"); // [images, texts, 2]
    let n_text = ids.dim(0).unwrap();
    for i in 0..pixels.dim(0).unwrap() {
        let img = image.image_embeds.narrow(0, i, 1).unwrap();
        let img = img
            .broadcast_as((n_text, img.dim(1).unwrap(), img.dim(2).unwrap()))
            .unwrap()
            .contiguous()
            .unwrap();
        let logits = m
            .itm_logits(
                ImageInput::VisionFeatures(
                    &m.vision_features(
                        &pixels.narrow(0, i, 1).unwrap().repeat((n_text, 1, 1, 1)).unwrap(),
                    )
                    .unwrap(),
                ),
                ids,
                &padding,
            )
            .unwrap();
        assert_close(&format!("itm logits image {i}"), &logits, &want.get(i).unwrap(), ATOL);
        // Same through already-normalized image embeds.
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let again = m.itm_logits_t(&img, ids, &padding, false, &mut rng).unwrap();
        assert_close(
            &format!("itm logits image {i} (image_embeds)"),
            &again,
            &want.get(i).unwrap(),
            ATOL,
        );
    }
}

#[test]
fn itm_checkpoint_matches_hf_plain_tensors() {
    check_itm(false);
}

#[test]
fn itm_checkpoint_matches_hf_trainable_vars() {
    check_itm(true);
}

#[test]
fn cached_vision_features_give_the_same_outputs() {
    let loaded = load_hf_dir(fixture("itm"), &opts(false)).unwrap();
    let m = &loaded.model;
    let e = load_tensors("itm/expected.safetensors");
    let pixels = get(&e, "pixel_values");
    let feats = m.vision_features(pixels).unwrap();
    let a = m.encode_image(ImageInput::Pixels(pixels)).unwrap();
    let b = m.encode_image(ImageInput::VisionFeatures(&feats)).unwrap();
    assert_eq!(common::max_abs_diff(&a.query_output, &b.query_output), 0.0);
    // The cache is the ViT output BEFORE the trainable ln_vision.
    assert!(common::max_abs_diff(&feats, &a.image_embeds) > 1e-2);
}

fn check_generation_checkpoint(name: &str) {
    // Strict by default: the LLM tensors are refused, by name.
    let err = load_hf_dir(fixture(name), &opts(false))
        .err()
        .expect("LLM tensors must be refused by default");
    let msg = err.to_string();
    assert!(msg.contains("language_projection.weight"), "{msg}");
    assert!(msg.contains("unexpected"), "{msg}");

    let o = LoadOptions { allow_known_unused: true, device: test_device(), ..Default::default() };
    let loaded = load_hf_dir(fixture(name), &o).unwrap();
    assert!(loaded.report.known_unused.iter().any(|(n, _)| n == "language_projection.weight"));
    assert!(loaded.report.known_unused.iter().any(|(n, _)| n.starts_with("language_model.")));
    let m = &loaded.model;
    assert!(m.heads().is_none() && m.qformer().embeddings().is_none());
    let e = load_tensors(&format!("{name}/qformer_outputs.safetensors"));
    let image = m.encode_image(ImageInput::Pixels(get(&e, "pixel_values"))).unwrap();
    assert_close(
        &format!("{name} vision last_hidden_state"),
        &image.image_embeds,
        get(&e, "vision_last_hidden_state"),
        ATOL,
    );
    assert_close(
        &format!("{name} query_output"),
        &image.query_output,
        get(&e, "query_output"),
        ATOL,
    );
    // No text FFN in these checkpoints: a text pass is refused, not silently wrong.
    let ids = Tensor::new(&[[1u32, 2, 3]], &test_device()).unwrap();
    assert!(m
        .itm_logits(ImageInput::Pixels(get(&e, "pixel_values")), &ids, &PaddingMask::all_keep(1, 3))
        .is_err());
}

#[test]
fn opt_checkpoint_vision_and_qformer_match_hf() {
    check_generation_checkpoint("opt");
}

#[test]
fn t5_checkpoint_vision_and_qformer_match_hf() {
    check_generation_checkpoint("t5");
}
