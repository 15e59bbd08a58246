//! Bad input to the scoring commands: one line on stderr naming the culprit, non-zero exit, no panic.

use std::ffi::OsString;

use crate::common::*;

fn assert_clean_error(a: &[OsString], culprit: &str) {
    let out = blip2(a);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail; stdout: {}", String::from_utf8_lossy(&out.stdout));
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(culprit), "error should name {culprit}: {err}");
}

fn score_with(model: OsString, image: OsString) -> Vec<OsString> {
    let mut a = vec![os("score"), os("--model"), model, os("--json"), os("--image"), image];
    a.extend(text_args(&TEXTS[..1]));
    a
}

#[test]
fn missing_image() {
    let a = score_with(os(fixture("itm")), os(fixture("images/nope.png")));
    assert_clean_error(&a, "nope.png");
}

#[test]
fn garbage_image() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("garbage.png");
    std::fs::write(&bad, b"this is not a png").unwrap();
    assert_clean_error(&score_with(os(fixture("itm")), os(&bad)), "garbage.png");
}

#[test]
fn wrong_directory() {
    // The images directory has no config.json.
    let a = score_with(os(fixture("images")), os(fixture("images/img0.png")));
    assert_clean_error(&a, "images");
    let a = score_with(os(fixture("no-such-model")), os(fixture("images/img0.png")));
    assert_clean_error(&a, "no-such-model");
}

#[test]
fn wrong_checkpoint() {
    // A safetensors file where a LAVIS .pth is expected.
    let mut a = score_with(os(fixture("itm")), os(fixture("images/img0.png")));
    a.extend([os("--lavis-checkpoint"), os(fixture("itm/lm_head.safetensors"))]);
    assert_clean_error(&a, "lm_head.safetensors");
}

#[test]
fn image_text_count_mismatch() {
    let mut a = vec![
        os("eval"),
        os("loss"),
        os("--model"),
        os(fixture("itm")),
        os("--lavis-checkpoint"),
        os(fixture("itm/lavis_stage1.pth")),
        os("--json"),
    ];
    a.extend(image_args(&images()));
    a.extend(text_args(&TEXTS[..3]));
    assert_clean_error(&a, "4 images but 3 texts");
}
