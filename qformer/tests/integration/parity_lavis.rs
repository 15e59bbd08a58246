//! A LAVIS stage-one `.pth` (no ViT) merged with the ViT of the HF directory reproduces the
//! original LAVIS 1.0.2 forward (tests/fixtures/hf-tiny/itm/expected_losses.safetensors, made by
//! `tools/lavis_losses.py`), and with HF's ln_vision eps the HF retrieval numbers.

use crate::common::{self, assert_close, fixture, get, load_tensors, test_device};
use candle_core::{IndexOp, Tensor};
use qformer::masks::PaddingMask;
use qformer::model::{itc_similarity, ImageInput};
use qformer::weights::{
    detect_parts, load, read_lavis_pth, LoadOptions, LoadedModel, TensorSet, LAVIS_LN_VISION_EPS,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const ATOL: f32 = 1e-4;

fn lavis_model(ln_vision_eps: Option<f64>, trainable: bool) -> LoadedModel {
    let dev = test_device();
    let (cfg, hf) = TensorSet::from_hf_dir(fixture("itm"), &dev).unwrap();
    let lavis = read_lavis_pth(fixture("itm/lavis_stage1.pth"), &dev).unwrap();
    assert_eq!(lavis.ln_vision_eps(), Some(LAVIS_LN_VISION_EPS));
    let set = lavis.merge(hf.vision_encoder_only()).unwrap();
    let parts = detect_parts(&cfg, &set);
    assert!(parts.lm_head && parts.stage_one_heads && parts.text);
    let opts = LoadOptions { trainable, ln_vision_eps, device: dev, ..Default::default() };
    load(&cfg, &set, parts, &opts).unwrap()
}

fn scalar(t: &Tensor) -> f32 {
    t.to_scalar::<f32>().unwrap()
}

#[test]
fn lavis_pth_reproduces_lavis_forward() {
    let loaded = lavis_model(None, true);
    let m = &loaded.model;
    let r = &loaded.report;
    assert!(r.defaulted.is_empty(), "temp comes from the checkpoint: {r}");
    let ignored: Vec<&str> = r.ignored.iter().map(|(n, _)| n.as_str()).collect();
    assert!(ignored.contains(&"Qformer.cls.predictions.decoder.weight"), "{ignored:?}");
    assert!(ignored.contains(&"Qformer.bert.embeddings.position_ids"), "{ignored:?}");
    assert_eq!(m.ln_vision().eps(), 1e-5);
    let temp = scalar(&m.heads().unwrap().temp);
    assert!((temp - 0.07).abs() < 1e-7);
    // Trainable parts are Vars: ViT excluded, ln_vision included.
    let vm = loaded.varmap.as_ref().unwrap();
    let names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
    assert!(names.iter().any(|n| n == "vision_model.post_layernorm.weight"));
    assert!(names.iter().any(|n| n == "cls.predictions.bias"));
    assert!(!names.iter().any(|n| n.starts_with("vision_model.encoder.")));

    let e = load_tensors("itm/expected_losses.safetensors");
    let image = m.encode_image(ImageInput::Pixels(get(&e, "pixel_values"))).unwrap();
    assert_close(
        "image_embeds_ln_vision (eps 1e-5)",
        &image.image_embeds,
        get(&e, "image_embeds_ln_vision"),
        ATOL,
    );
    assert_close("query_output", &image.query_output, get(&e, "query_output"), ATOL);
    let image_feats = image.image_feats.clone().unwrap();
    assert_close("image_feats", &image_feats, get(&e, "image_feats"), ATOL);

    let ids = get(&e, "text_input_ids");
    let padding = PaddingMask::from_tensor(get(&e, "text_attention_mask")).unwrap();
    let text = m.encode_text(ids, &padding).unwrap();
    assert_close(
        "text_cls_hidden",
        &text.text_output.i((.., 0)).unwrap(),
        get(&e, "text_cls_hidden"),
        ATOL,
    );
    assert_close("text_feat", &text.text_feat, get(&e, "text_feat"), ATOL);
    let sim = itc_similarity(&image_feats, &text.text_feat).unwrap();
    assert_close("itc_sim_i2t_before_temp", &sim, get(&e, "itc_sim_i2t_before_temp"), ATOL);
    let sim_t = (sim.clone() / temp as f64).unwrap();
    assert_close("sim_i2t (/temp)", &sim_t, get(&e, "sim_i2t"), ATOL);

    // ITM rows in LAVIS order: (image b, text b), (neg image for text b, text b), (image b, neg text for image b).
    let neg_img: Vec<i64> = get(&e, "neg_image_idx_for_text").to_vec1().unwrap();
    let b = neg_img.len();
    let mut img_rows: Vec<u32> = (0..b as u32).collect();
    img_rows.extend(neg_img.iter().map(|&i| i as u32));
    img_rows.extend(0..b as u32);
    let img_rows = Tensor::new(img_rows.as_slice(), &test_device()).unwrap();
    let itm_images = image.image_embeds.index_select(&img_rows, 0).unwrap();
    let itm_mask = get(&e, "itm_attention_mask_all");
    let q = m.num_queries();
    let text_mask =
        PaddingMask::from_tensor(&itm_mask.narrow(1, q, itm_mask.dim(1).unwrap() - q).unwrap())
            .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let itm = m
        .itm_logits_t(&itm_images, get(&e, "itm_text_ids_all"), &text_mask, false, &mut rng)
        .unwrap();
    assert_close("itm_logits (3B rows)", &itm, get(&e, "itm_logits"), ATOL);

    // ITG: [DEC] text attends the image pass's cached query K/V and itself causally.
    let itg_mask = get(&e, "itg_attention_mask");
    let dec_padding =
        PaddingMask::from_tensor(&itg_mask.narrow(1, q, itg_mask.dim(1).unwrap() - q).unwrap())
            .unwrap();
    let logits = m
        .itg_logits_t(
            &image.query_kv,
            get(&e, "itg_decoder_input_ids"),
            &dec_padding,
            false,
            &mut rng,
        )
        .unwrap();
    assert_close("itg_logits", &logits, get(&e, "itg_logits"), ATOL);
}

#[test]
fn lavis_pth_with_hf_eps_matches_hf_retrieval_numbers() {
    let loaded = lavis_model(Some(1e-6), false);
    let m = &loaded.model;
    let e = load_tensors("itm/expected_losses.safetensors");
    let image = m.encode_image(ImageInput::Pixels(get(&e, "pixel_values"))).unwrap();
    assert_close(
        "hfeps.image_embeds_ln_vision",
        &image.image_embeds,
        get(&e, "hfeps.image_embeds_ln_vision"),
        ATOL,
    );
    assert_close(
        "hfeps.image_feats",
        &image.image_feats.clone().unwrap(),
        get(&e, "hfeps.image_feats"),
        ATOL,
    );

    // Same ITC / ITM as the HF directory itself.
    let h = load_tensors("itm/expected.safetensors");
    assert_close(
        "vs HF vision_last_hidden_state",
        &image.image_embeds,
        get(&h, "vision_last_hidden_state"),
        ATOL,
    );
    let ids = get(&h, "input_ids");
    let padding = PaddingMask::from_tensor(get(&h, "attention_mask")).unwrap();
    let text = m.encode_text(ids, &padding).unwrap();
    let itc = itc_similarity(&image.image_feats.clone().unwrap(), &text.text_feat).unwrap();
    assert_close("vs HF itc_logits_per_image", &itc, get(&h, "itc_logits_per_image"), ATOL);
    let want = get(&h, "itm_logits");
    let n = ids.dim(0).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for i in 0..image.image_embeds.dim(0).unwrap() {
        let idx = Tensor::new(vec![i as u32; n].as_slice(), &test_device()).unwrap();
        let img = image.image_embeds.index_select(&idx, 0).unwrap();
        let logits = m.itm_logits_t(&img, ids, &padding, false, &mut rng).unwrap();
        assert_close(&format!("vs HF itm_logits image {i}"), &logits, &want.get(i).unwrap(), ATOL);
    }
}

#[test]
fn lavis_eps_differs_measurably_from_hf_eps() {
    // Guards the eps plumbing: if ln_vision ignored the LAVIS eps, the two would coincide.
    let lavis = lavis_model(None, false);
    let hf = lavis_model(Some(1e-6), false);
    let e = load_tensors("itm/expected_losses.safetensors");
    let px = get(&e, "pixel_values");
    let a = lavis.model.image_embeds(ImageInput::Pixels(px)).unwrap();
    let b = hf.model.image_embeds(ImageInput::Pixels(px)).unwrap();
    let d = common::max_abs_diff(&a, &b);
    assert!(d > 2e-5, "ln_vision eps 1e-5 vs 1e-6 should differ, got {d:e}");
}

#[test]
fn hf_dir_plus_lm_head_file_runs_itg() {
    // The HF retrieval checkpoint lacks the ITG head; it comes from a LAVIS-named safetensors file.
    let dev = test_device();
    let (cfg, hf) = TensorSet::from_hf_dir(fixture("itm"), &dev).unwrap();
    let head =
        qformer::weights::read_lavis_safetensors(fixture("itm/lm_head.safetensors"), &dev).unwrap();
    let set = hf.merge(head).unwrap();
    let parts = detect_parts(&cfg, &set);
    assert!(parts.lm_head);
    let loaded =
        load(&cfg, &set, parts, &LoadOptions { device: dev, ..Default::default() }).unwrap();
    let m = &loaded.model;
    assert_eq!(m.ln_vision().eps(), 1e-6, "HF source keeps the config eps");
    let e = load_tensors("itm/expected_losses.safetensors");
    let image = m.encode_image(ImageInput::Pixels(get(&e, "pixel_values"))).unwrap();
    let itg_mask = get(&e, "itg_attention_mask");
    let q = m.num_queries();
    let padding =
        PaddingMask::from_tensor(&itg_mask.narrow(1, q, itg_mask.dim(1).unwrap() - q).unwrap())
            .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let logits = m
        .itg_logits_t(&image.query_kv, get(&e, "itg_decoder_input_ids"), &padding, false, &mut rng)
        .unwrap();
    assert_close(
        "hfeps.itg_logits_sample0",
        &logits.get(0).unwrap(),
        get(&e, "hfeps.itg_logits_sample0"),
        ATOL,
    );
}
