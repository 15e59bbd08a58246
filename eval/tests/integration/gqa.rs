//! GQA accuracy against the LAVIS GQATask arithmetic run on the same pairs
//! (`tests/fixtures/vqa-tricky/gqa.json`, made by tools/vqa_tricky_reference.py with the 1.0.2 scorer).

use std::path::Path;

use eval::gqa::{gqa_accuracy, gqa_correct, GqaPrediction, GqaScoring};
use serde_json::Value;

#[test]
fn matches_lavis_for_every_variant() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vqa-tricky/gqa.json");
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let rows: Vec<GqaPrediction> = fx["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, p)| GqaPrediction {
            question_id: Value::from(i),
            pred_ans: p["pred_ans"].as_str().unwrap().into(),
            gt_ans: Some(p["gt_ans"].as_str().unwrap().into()),
        })
        .collect();
    for (key, scoring) in [
        ("wheel_generate", GqaScoring::Wheel102Generate),
        ("wheel_rank", GqaScoring::Wheel102Rank),
        ("main", GqaScoring::LavisMain),
    ] {
        let want: Vec<bool> =
            fx[key]["correct"].as_array().unwrap().iter().map(|v| v.as_i64() == Some(1)).collect();
        let got: Vec<bool> = rows
            .iter()
            .map(|r| gqa_correct(&r.pred_ans, r.gt_ans.as_deref().unwrap(), scoring))
            .collect();
        assert_eq!(got, want, "{key}");
        assert_eq!(
            gqa_accuracy(&rows, scoring).unwrap(),
            fx[key]["acc"].as_f64().unwrap(),
            "{key}"
        );
    }
}

#[test]
fn leaderboard_rows_and_empty_sets_are_errors() {
    let row = GqaPrediction {
        question_id: Value::from("201307251"),
        pred_ans: "yes".into(),
        gt_ans: None,
    };
    let e = gqa_accuracy(&[row], GqaScoring::default()).unwrap_err().to_string();
    assert!(e.contains("\"201307251\"") && e.contains("gt_ans"), "{e}");
    assert!(gqa_accuracy(&[], GqaScoring::default()).is_err());
}
