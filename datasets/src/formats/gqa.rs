//! GQA questions: the official dict keyed by question id (`testdev_balanced_questions.json`), or
//! LAVIS's converted list (LAVIS `configs/datasets/gqa/balanced_testdev.yaml`, `GQAEvalDataset`).

use std::path::Path;

use serde::Deserialize;

use super::json::read_json;
use crate::error::{DataError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GqaQuestion {
    pub question_id: String,
    /// Image file name relative to the images dir (official ids get `.jpg` appended).
    pub image: String,
    pub question: String,
    /// Absent in leaderboard (test) files.
    pub answer: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum GqaFile {
    Official(std::collections::BTreeMap<String, OfficialRow>),
    Lavis(Vec<LavisRow>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OfficialRow {
    question: String,
    image_id: String,
    #[serde(default)]
    answer: Option<String>,
}

#[derive(Deserialize)]
struct LavisRow {
    image: String,
    question: String,
    question_id: serde_json::Value,
    #[serde(default)]
    answer: Option<String>,
}

pub fn read_gqa(path: &Path) -> Result<Vec<GqaQuestion>> {
    match read_json::<GqaFile>(path)? {
        GqaFile::Official(map) => Ok(map
            .into_iter()
            .map(|(qid, r)| GqaQuestion {
                question_id: qid,
                image: format!("{}.jpg", r.image_id),
                question: r.question,
                answer: r.answer,
            })
            .collect()),
        GqaFile::Lavis(rows) => rows
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let question_id = match r.question_id {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    other => {
                        return Err(DataError::field(
                            path,
                            format!("[{i}].question_id"),
                            format!("expected a string or integer, got {other}"),
                        ))
                    }
                };
                Ok(GqaQuestion {
                    question_id,
                    image: r.image,
                    question: r.question,
                    answer: r.answer,
                })
            })
            .collect(),
    }
}
