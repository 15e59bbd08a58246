//! `blip2 score` end to end on the tiny HF fixture. References: HF transformers 4.57.6
//! `Blip2ForImageTextRetrieval` (tests/fixtures/hf-tiny/itm/expected.json) and the original LAVIS
//! 1.0.2 forward (expected_losses.{json,safetensors}).

use std::ffi::OsString;

use crate::common::*;

fn score(extra: &[OsString], texts: &[&str]) -> serde_json::Value {
    let mut a = vec![os("score"), os("--model"), os(fixture("itm")), os("--json")];
    a.extend_from_slice(extra);
    a.extend(image_args(&images()));
    a.extend(text_args(texts));
    stdout_json(&blip2(&a))
}

fn softmax1(logits: &[f32]) -> f64 {
    let (a, b) = (logits[0] as f64, logits[1] as f64);
    1.0 / (1.0 + (a - b).exp())
}

#[test]
fn score_json_matches_hf_retrieval_model() {
    let got = score(&[], &TEXTS);
    let obj = got.as_object().unwrap();
    assert_eq!(obj.len(), 2, "exactly itc and itm: {got}");
    let want = json_file("itm/expected.json");
    assert_matrix_close("itc", &matrix(&got["itc"]), &matrix(&want["itc"]), ATOL as f64);
    assert_matrix_close(
        "itm match probability",
        &matrix(&got["itm"]),
        &matrix(&want["itm_match_prob"]),
        ATOL as f64,
    );
}

/// With the LAVIS stage-one checkpoint (ln_vision eps 1e-5) the 4x4 image/caption block must equal
/// LAVIS's own similarities and ITM logits from `Blip2Qformer.forward`.
#[test]
fn score_with_lavis_checkpoint_matches_lavis_forward() {
    let got = score(&[os("--lavis-checkpoint"), os(fixture("itm/lavis_stage1.pth"))], &TEXTS);
    let itc = matrix(&got["itc"]);
    let itm = matrix(&got["itm"]);
    let e = load_tensors(&fixture("itm/expected_losses.safetensors"));
    let sim: Vec<Vec<f64>> = e["itc_sim_i2t_before_temp"]
        .to_vec2::<f32>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(f64::from).collect())
        .collect();
    let itc_block: Vec<Vec<f64>> = itc.iter().map(|r| r[..4].to_vec()).collect();
    assert_matrix_close("itc vs LAVIS sim_i2t / temp", &itc_block, &sim, ATOL as f64);

    // LAVIS ITM rows: (b, b) positives, (neg image of text b, b), (b, neg text of image b).
    let logits = e["itm_logits"].to_vec2::<f32>().unwrap();
    let neg_img = e["neg_image_idx_for_text"].to_vec1::<i64>().unwrap();
    let neg_txt = e["neg_text_idx_for_image"].to_vec1::<i64>().unwrap();
    let mut pairs = Vec::new();
    for b in 0..4 {
        pairs.push((b, b));
    }
    for (b, &i) in neg_img.iter().enumerate() {
        pairs.push((i as usize, b));
    }
    for (b, &t) in neg_txt.iter().enumerate() {
        pairs.push((b, t as usize));
    }
    let got_rows: Vec<Vec<f64>> = pairs.iter().map(|&(i, t)| vec![itm[i][t]]).collect();
    let want_rows: Vec<Vec<f64>> = logits.iter().map(|l| vec![softmax1(l)]).collect();
    assert_matrix_close("itm vs LAVIS itm_logits", &got_rows, &want_rows, ATOL as f64);
}

#[test]
fn score_table_names_every_pair() {
    let mut a = vec![os("score"), os("--model"), os(fixture("itm"))];
    a.extend(image_args(&images()[..2]));
    a.extend(text_args(&TEXTS[..3]));
    let out = blip2(&a);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for t in &TEXTS[..3] {
        assert_eq!(text.matches(t).count(), 2, "{t} once per image in:\n{text}");
    }
}
