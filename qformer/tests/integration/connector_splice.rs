//! The connector path (`Piece`s → `splice` → LLaMA) against HF `LlavaForConditionalGeneration` on
//! the llava-tiny fixture: all eight cases in one right-padded batch of unequal lengths give HF's
//! logits on every real position and HF's loss per case; a left-padded batch gives the same
//! logits at the real positions; mismatched image counts are refused.

use std::path::PathBuf;

use candle_core::{DType, IndexOp, Tensor};
use candle_nn::VarBuilder;
use qformer::connector::{connector_lm_loss, splice, Connector, PadSide, Piece};
use qformer::llava::{load_dir, LlavaForConditionalGeneration};

use crate::common::{max_abs_diff, test_device};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llava-tiny")
}

fn model() -> LlavaForConditionalGeneration {
    let (cfg, _, tensors) = load_dir(dir(), &test_device()).expect("load llava");
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &test_device());
    LlavaForConditionalGeneration::load(vb, &cfg).expect("build llava")
}

/// One case as the connector reads it: the expanded ids split at the image run (prompt pieces),
/// and optionally the answer as a learned piece. Also the image index and the HF loss.
struct Case {
    image: usize,
    pieces: Vec<Piece>,
    ids_len: usize,
    logits: Tensor,
    loss: f32,
}

fn cases(m: &LlavaForConditionalGeneration, with_answer: bool) -> (Vec<Case>, Tensor) {
    let d = dir();
    let exp = candle_core::safetensors::load(d.join("expected.safetensors"), &test_device())
        .expect("expected.safetensors");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("expected.json")).unwrap()).unwrap();
    let image_id = m.config().image_token_index;
    let mut out = Vec::new();
    for c in json["cases"].as_array().unwrap() {
        let (i, j) = (c["image"].as_u64().unwrap() as usize, c["prompt"].as_u64().unwrap());
        let ids: Vec<u32> =
            exp[&format!("input_ids_{i}_{j}")].to_dtype(DType::U32).unwrap().to_vec1().unwrap();
        // The expanded ids hold one run of image tokens: text before, the image, text after.
        let first = ids.iter().position(|&t| t == image_id).unwrap();
        let last = ids.iter().rposition(|&t| t == image_id).unwrap();
        assert_eq!(last + 1 - first, m.tokens_per_image());
        let mut pieces = vec![
            Piece::prompt(ids[..first].to_vec()),
            Piece::Image,
            Piece::prompt(ids[last + 1..].to_vec()),
        ];
        if with_answer {
            let answer: Vec<u32> = c["answer_label_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            pieces.push(Piece::target(answer));
        }
        out.push(Case {
            image: i,
            pieces,
            ids_len: ids.len(),
            logits: exp[&format!("logits_{i}_{j}")].clone(),
            loss: c["loss"].as_f64().unwrap() as f32,
        });
    }
    (out, exp["pixel_values"].clone())
}

fn image_rows(m: &LlavaForConditionalGeneration, cases: &[Case], pv: &Tensor) -> Tensor {
    let idx: Vec<u32> = cases.iter().map(|c| c.image as u32).collect();
    let idx = Tensor::from_vec(idx, cases.len(), pv.device()).unwrap();
    m.image_embeds(&pv.index_select(&idx, 0).unwrap()).unwrap()
}

#[test]
fn spliced_batch_gives_hf_logits_and_losses_with_either_padding() {
    let m = model();
    // Unequal lengths: drop the answer's last tokens from every other case.
    let (mut cs, pv) = cases(&m, true);
    for (k, c) in cs.iter_mut().enumerate() {
        if k % 2 == 1 {
            if let Some(Piece::Text { ids, .. }) = c.pieces.last_mut() {
                ids.truncate(1);
            }
        }
    }
    let rows: Vec<Vec<Piece>> = cs.iter().map(|c| c.pieces.clone()).collect();
    let feats = image_rows(&m, &cs, &pv);
    let llm = m.language_model();
    for pad in [PadSide::Right, PadSide::Left] {
        let s = splice(&rows, &feats, llm, pad).unwrap();
        let l = s.embeds.dim(1).unwrap();
        let logits = llm.forward_embeds(&s.embeds, &s.attention_mask).unwrap();
        for (b, c) in cs.iter().enumerate() {
            let start = match pad {
                PadSide::Right => 0,
                PadSide::Left => l - s.lengths[b],
            };
            let got = logits.i((b, start..start + c.ids_len)).unwrap();
            let d = max_abs_diff(&got, &c.logits);
            assert!(d <= 1e-4, "{pad:?} row {b}: logits differ from HF by {d:e}");
        }
    }
    // Full answers: each case's loss alone equals HF's.
    let (cs, pv) = cases(&m, true);
    for c in &cs {
        let feats = image_rows(&m, std::slice::from_ref(c), &pv);
        let loss = connector_lm_loss(&m, std::slice::from_ref(&c.pieces), &feats).unwrap();
        let got = loss.to_scalar::<f32>().unwrap();
        assert!((got - c.loss).abs() <= 1e-5, "loss {got} vs HF {}", c.loss);
    }
}

#[test]
fn splice_labels_only_learned_pieces_and_refuses_an_image_count_mismatch() {
    let m = model();
    let (cs, pv) = cases(&m, true);
    let feats = image_rows(&m, &cs[..2], &pv);
    let rows: Vec<Vec<Piece>> = cs[..2].iter().map(|c| c.pieces.clone()).collect();
    let s = splice(&rows, &feats, m.language_model(), PadSide::Right).unwrap();
    for (row, pieces) in s.labels.iter().zip(&rows) {
        let learned: Vec<i64> = row.iter().copied().filter(|&t| t != -100).collect();
        let Some(Piece::Text { ids, learn: true }) = pieces.last() else { panic!("answer piece") };
        assert_eq!(learned, ids.iter().map(|&t| t as i64).collect::<Vec<_>>());
    }
    let err = splice(&rows, &feats.narrow(0, 0, 1).unwrap(), m.language_model(), PadSide::Right)
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 image slot(s)") && err.contains("1 image(s)"), "{err}");
}
