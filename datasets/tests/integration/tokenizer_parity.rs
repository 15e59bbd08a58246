//! Token ids against the HF/LAVIS fixtures.

use crate::common::{fixtures, read_safetensors};
use datasets::text::{Padding, TextTokenizer};

fn texts() -> Vec<String> {
    let j: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("hf-tiny/itm/expected.json")).unwrap(),
    )
    .unwrap();
    j["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
}

fn as_i64(v: &[u32]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

#[test]
fn hf_longest_padding_matches_fixture() {
    let dir = fixtures().join("hf-tiny/itm");
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), 32).unwrap();
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let got = tok.encode(&refs, Padding::Longest).unwrap();
    let want = read_safetensors(&dir.join("expected.safetensors"));
    assert_eq!(vec![got.batch, got.seq_len], want["input_ids"].shape);
    assert_eq!(as_i64(&got.input_ids), want["input_ids"].i64s());
    assert_eq!(as_i64(&got.attention_mask), want["attention_mask"].i64s());
}

#[test]
fn lavis_max_length_ids_and_dec_bos_match_fixture() {
    let dir = fixtures().join("hf-tiny/itm");
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), 32).unwrap();
    assert_eq!(tok.bos_id, 183);
    assert_eq!(tok.pad_id, 0);
    let texts = texts();
    let refs: Vec<&str> = texts[..4].iter().map(String::as_str).collect();
    let got = tok.encode(&refs, Padding::MaxLength).unwrap();
    let want = read_safetensors(&dir.join("expected_losses.safetensors"));
    assert_eq!(vec![got.batch, got.seq_len], want["text_input_ids"].shape);
    assert_eq!(as_i64(&got.input_ids), want["text_input_ids"].i64s());
    assert_eq!(as_i64(&got.attention_mask), want["text_attention_mask"].i64s());
    assert_eq!(as_i64(&got.with_bos(tok.bos_id)), want["itg_decoder_input_ids"].i64s());
}

#[test]
fn truncation_keeps_cls_and_sep() {
    let dir = fixtures().join("hf-tiny/itm");
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), 5).unwrap();
    let got = tok.encode(&["a red circle on the left of the picture"], Padding::MaxLength).unwrap();
    assert_eq!(got.seq_len, 5);
    let full = TextTokenizer::from_file(&dir.join("tokenizer.json"), 64)
        .unwrap()
        .encode(&["a red circle on the left of the picture"], Padding::Longest)
        .unwrap();
    assert_eq!(got.row(0)[..4], full.row(0)[..4]);
    assert_eq!(got.row(0)[4], *full.row(0).iter().rev().find(|&&v| v != 0).unwrap());
}

#[test]
fn missing_tokenizer_file_names_the_path() {
    let err =
        TextTokenizer::from_file(std::path::Path::new("/nonexistent/tok.json"), 32).err().unwrap();
    assert!(err.to_string().contains("/nonexistent/tok.json"));
}
