//! `blip2 eval loss` against the ORIGINAL LAVIS 1.0.2 `Blip2Qformer.forward` stage-one losses on the
//! tiny fixture (tests/fixtures/hf-tiny/itm/expected_losses.json; hardest negatives, eval mode,
//! images 0..3 with captions 0..3, text padded to 32).

use std::ffi::OsString;

use crate::common::*;

fn loss(extra: &[OsString]) -> serde_json::Value {
    let mut a = vec![
        os("eval"),
        os("loss"),
        os("--model"),
        os(fixture("itm")),
        os("--lm-head"),
        os(fixture("itm/lm_head.safetensors")),
        os("--json"),
    ];
    a.extend_from_slice(extra);
    a.extend(image_args(&images()));
    a.extend(text_args(&TEXTS[..4]));
    stdout_json(&blip2(&a))
}

fn assert_losses(got: &serde_json::Value, want: [f64; 4]) {
    let obj = got.as_object().unwrap();
    assert_eq!(obj.len(), 4, "exactly itc, itm, itg, total: {got}");
    for (key, w) in ["itc", "itm", "itg", "total"].iter().zip(want) {
        let g = got[key].as_f64().unwrap_or_else(|| panic!("{key} missing: {got}"));
        assert!((g - w).abs() <= ATOL as f64, "{key}: got {g}, LAVIS {w}");
    }
}

#[test]
fn lavis_checkpoint_losses_match_lavis() {
    let got = loss(&[
        os("--negatives"),
        os("hardest"),
        os("--lavis-checkpoint"),
        os(fixture("itm/lavis_stage1.pth")),
    ]);
    let l = &json_file("itm/expected_losses.json")["losses"];
    let f = |k: &str| l[k].as_f64().unwrap();
    assert_losses(&got, [f("loss_itc"), f("loss_itm"), f("loss_itg"), f("total")]);
}

/// The HF directory alone (ln_vision eps 1e-6 from its config) matches LAVIS run with that eps.
#[test]
fn hf_directory_losses_match_lavis_with_hf_eps() {
    let got = loss(&[os("--negatives"), os("hardest")]);
    let l =
        &json_file("itm/expected_losses.json")["variant_ln_vision_eps_from_hf_config"]["losses"];
    let f = |k: &str| l[k].as_f64().unwrap();
    assert_losses(&got, [f("loss_itc"), f("loss_itm"), f("loss_itg"), f("total")]);
}

#[test]
fn sampled_negatives_are_seeded() {
    let run = |seed: &str| loss(&[os("--negatives"), os("sampled"), os("--seed"), os(seed)]);
    let a = run("7");
    assert_eq!(a, run("7"), "same seed, same losses");
    // ITC and ITG do not depend on the negatives.
    let hardest = loss(&[os("--negatives"), os("hardest")]);
    assert_eq!(a["itc"], hardest["itc"]);
    assert_eq!(a["itg"], hardest["itg"]);
}
