//! GQA accuracy as LAVIS's `GQATask._report_metrics` computes it: exact string match after the VQA
//! scorer's normalisation, `100 * correct / total`, not rounded.
//!
//! Which side is normalised depends on the LAVIS version: the salesforce-lavis 1.0.2 wheel normalises
//! only the prediction, and only when answers are generated (`inference_method == "generate"`, the BLIP-2
//! zero-shot setting); LAVIS main normalises prediction and ground truth. Both use the punctuation and
//! digit/article passes without the newline/strip step that VQA predictions get.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::vqa::{process_digit_article, process_punctuation};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GqaScoring {
    /// salesforce-lavis 1.0.2, `inference_method: generate`: prediction normalised, ground truth raw.
    #[default]
    Wheel102Generate,
    /// salesforce-lavis 1.0.2, `inference_method: rank`: raw strings compared.
    Wheel102Rank,
    /// LAVIS main: both sides normalised.
    LavisMain,
}

/// One row of a LAVIS GQA result file (`{"question_id", "pred_ans", "gt_ans"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GqaPrediction {
    pub question_id: serde_json::Value,
    pub pred_ans: String,
    /// `null` on the test-dev leaderboard split, where no accuracy can be computed.
    pub gt_ans: Option<String>,
}

fn gqa_normalize(text: &str) -> String {
    process_digit_article(&process_punctuation(text))
}

/// Whether one prediction counts as correct under `scoring`.
pub fn gqa_correct(pred: &str, gt: &str, scoring: GqaScoring) -> bool {
    match scoring {
        GqaScoring::Wheel102Generate => gqa_normalize(pred) == gt,
        GqaScoring::Wheel102Rank => pred == gt,
        GqaScoring::LavisMain => gqa_normalize(pred) == gqa_normalize(gt),
    }
}

/// Accuracy in percent: `sum(correct) / len * 100` (that operation order, as LAVIS has it).
pub fn gqa_accuracy(rows: &[GqaPrediction], scoring: GqaScoring) -> Result<f64> {
    if rows.is_empty() {
        return Err(Error::Invalid("GQA accuracy of an empty result set is undefined".into()));
    }
    let mut correct = 0usize;
    for (i, row) in rows.iter().enumerate() {
        let gt = row.gt_ans.as_deref().ok_or_else(|| {
            Error::Invalid(format!(
                "GQA result [{i}] (question_id {}) has no gt_ans: a leaderboard split cannot be scored",
                row.question_id
            ))
        })?;
        correct += gqa_correct(&row.pred_ans, gt, scoring) as usize;
    }
    Ok(correct as f64 / rows.len() as f64 * 100.0)
}

/// Read a LAVIS GQA result file.
pub fn read_gqa_results(path: &Path) -> Result<Vec<GqaPrediction>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::json(path, e))
}
