//! Mask-mode equivalences of the Q-Former on the tiny LAVIS checkpoint (BLIP-2 spec §4):
//! one UniModal pass over [queries; text] equals the separate image and text passes, and one
//! MultimodalCausal pass equals the image pass followed by the ITG pass over its cached K/V.

use crate::common::{fixture, get, load_tensors, max_abs_diff, test_device};
use qformer::masks::{AdditiveMask, MaskMode, PaddingMask};
use qformer::model::{Blip2Qformer, ImageInput, QFormerInput};
use qformer::weights::{detect_parts, load, read_lavis_pth, LoadOptions, TensorSet};

fn model() -> Blip2Qformer {
    let dev = test_device();
    let (cfg, hf) = TensorSet::from_hf_dir(fixture("itm"), &dev).unwrap();
    let set = read_lavis_pth(fixture("itm/lavis_stage1.pth"), &dev)
        .unwrap()
        .merge(hf.vision_encoder_only())
        .unwrap();
    let parts = detect_parts(&cfg, &set);
    load(&cfg, &set, parts, &LoadOptions { device: dev, ..Default::default() }).unwrap().model
}

#[test]
fn single_pass_modes_equal_separate_passes() {
    let m = model();
    let e = load_tensors("itm/expected_losses.safetensors");
    let ids = get(&e, "text_input_ids");
    let padding = PaddingMask::from_tensor(get(&e, "text_attention_mask")).unwrap();
    let image = m.encode_image(ImageInput::Pixels(get(&e, "pixel_values"))).unwrap();
    let text = m.encode_text(ids, &padding).unwrap();
    let b = ids.dim(0).unwrap();
    let q = m.num_queries();
    let queries = m.expanded_queries(b).unwrap();

    let joint = |mode: MaskMode| {
        let mask = AdditiveMask::new(mode, q, Some(&padding), b, &test_device()).unwrap();
        let inp = QFormerInput {
            query_embeds: Some(&queries),
            input_ids: Some(ids),
            self_mask: &mask,
            image_embeds: Some(&image.image_embeds),
            past_query_kv: None,
            image_rows: None,
        };
        m.qformer().forward_eval(&inp).unwrap()
    };

    let uni = joint(MaskMode::UniModal);
    assert!(max_abs_diff(&uni.query_output().unwrap(), &image.query_output) < 1e-5);
    // All text rows, padded ones included: both passes mask the same keys.
    assert!(max_abs_diff(&uni.text_output().unwrap(), &text.text_output) < 1e-5);

    // ITG: queries never see text, so the joint causal pass gives the image-pass queries, and its
    // text rows equal the decoder pass over the cached query K/V.
    let causal = joint(MaskMode::MultimodalCausal);
    assert!(max_abs_diff(&causal.query_output().unwrap(), &image.query_output) < 1e-5);
    let mask = AdditiveMask::new(MaskMode::MultimodalCausal, q, Some(&padding), b, &test_device())
        .unwrap()
        .text_rows()
        .unwrap();
    let inp = QFormerInput {
        query_embeds: None,
        input_ids: Some(ids),
        self_mask: &mask,
        image_embeds: None,
        past_query_kv: Some(&image.query_kv),
        image_rows: None,
    };
    let cached = m.qformer().forward_eval(&inp).unwrap();
    assert_eq!(cached.num_queries, 0);
    assert!(max_abs_diff(&causal.text_output().unwrap(), &cached.hidden_states) < 1e-5);

    // And the bidirectional (ITM) pass really differs: queries now see the text.
    let bi = joint(MaskMode::Bidirectional);
    assert!(max_abs_diff(&bi.query_output().unwrap(), &image.query_output) > 1e-3);
}

#[test]
fn mismatched_mask_is_refused() {
    let m = model();
    let e = load_tensors("itm/expected_losses.safetensors");
    let ids = get(&e, "text_input_ids");
    let padding = PaddingMask::from_tensor(get(&e, "text_attention_mask")).unwrap();
    let b = ids.dim(0).unwrap();
    // A mask built for queries + text used on a text-only pass.
    let mask = AdditiveMask::new(
        MaskMode::Bidirectional,
        m.num_queries(),
        Some(&padding),
        b,
        &test_device(),
    )
    .unwrap();
    let inp = QFormerInput {
        query_embeds: None,
        input_ids: Some(ids),
        self_mask: &mask,
        image_embeds: None,
        past_query_kv: None,
        image_rows: None,
    };
    let err = m.qformer().forward_eval(&inp).unwrap_err().to_string();
    assert!(err.contains("self-attention mask"), "{err}");
}
