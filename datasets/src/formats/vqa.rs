//! VQAv2 / OK-VQA official question + annotation files, and LAVIS's VQA row JSON
//! (official layout as the VQA API's `vqaTools/vqa.py` reads it; LAVIS rows as in its
//! `configs/datasets/coco/defaults_vqa.yaml` and `configs/datasets/okvqa/defaults.yaml`).

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::json::{read_json, OneOrMany};
use crate::error::{DataError, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VqaAnswer {
    pub answer: String,
    #[serde(default)]
    pub answer_confidence: Option<String>,
    pub answer_id: u32,
    /// OK-VQA keeps the unprocessed answer too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_answer: Option<String>,
}

/// One question joined with its annotation (absent for test splits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VqaQuestion {
    pub question_id: u64,
    pub image_id: u64,
    pub question: String,
    pub annotation: Option<VqaAnnotation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VqaAnnotation {
    pub question_id: u64,
    pub image_id: u64,
    pub question_type: String,
    pub answer_type: String,
    #[serde(default)]
    pub multiple_choice_answer: Option<String>,
    pub answers: Vec<VqaAnswer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VqaQuestionRow {
    pub image_id: u64,
    pub question: String,
    pub question_id: u64,
}

#[derive(Deserialize)]
struct QuestionsFile {
    questions: Vec<VqaQuestionRow>,
}

#[derive(Deserialize)]
struct AnnotationsFile {
    annotations: Vec<VqaAnnotation>,
}

/// Read the official questions file and, if given, join the annotations file by question id.
/// A question without annotation (when annotations are given) is an error naming its id.
pub fn read_vqa_official(questions: &Path, annotations: Option<&Path>) -> Result<Vec<VqaQuestion>> {
    let q: QuestionsFile = read_json(questions)?;
    let mut anns: HashMap<u64, VqaAnnotation> = HashMap::new();
    if let Some(a) = annotations {
        let file: AnnotationsFile = read_json(a)?;
        for (i, ann) in file.annotations.into_iter().enumerate() {
            if ann.answers.is_empty() {
                return Err(DataError::field(a, format!("annotations[{i}].answers"), "empty"));
            }
            anns.insert(ann.question_id, ann);
        }
    }
    let mut out = Vec::with_capacity(q.questions.len());
    for row in q.questions {
        let annotation = match annotations {
            Some(a) => Some(anns.remove(&row.question_id).ok_or_else(|| {
                DataError::field(
                    a,
                    "annotations",
                    format!("no annotation for question_id {}", row.question_id),
                )
            })?),
            None => None,
        };
        out.push(VqaQuestion {
            question_id: row.question_id,
            image_id: row.image_id,
            question: row.question,
            annotation,
        });
    }
    Ok(out)
}

/// A LAVIS/BLIP VQA row (`vqa_train.json`, `vqa_val_eval.json`, `okvqa_*.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LavisVqaRow {
    pub question_id: u64,
    pub question: String,
    pub image: String,
    /// Raw answers (10 for VQAv2, 1 for VG rows, none for test files).
    pub answers: Vec<String>,
    pub dataset: Option<String>,
}

impl LavisVqaRow {
    /// LAVIS training targets: distinct answers weighted by their share of the answer list.
    pub fn weighted_answers(&self) -> Vec<(String, f32)> {
        let mut out: Vec<(String, f32)> = Vec::new();
        for a in &self.answers {
            match out.iter_mut().find(|(s, _)| s == a) {
                Some((_, w)) => *w += 1.0 / self.answers.len() as f32,
                None => out.push((a.clone(), 1.0 / self.answers.len() as f32)),
            }
        }
        out
    }
}

#[derive(Deserialize)]
struct RawLavisRow {
    question_id: serde_json::Value,
    question: String,
    image: String,
    #[serde(default)]
    answer: Option<OneOrMany>,
    #[serde(default)]
    dataset: Option<String>,
}

pub fn read_lavis_vqa(path: &Path) -> Result<Vec<LavisVqaRow>> {
    let rows: Vec<RawLavisRow> = read_json(path)?;
    rows.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let question_id = match &r.question_id {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            }
            .ok_or_else(|| {
                DataError::field(path, format!("[{i}].question_id"), "expected an integer id")
            })?;
            Ok(LavisVqaRow {
                question_id,
                question: r.question,
                image: r.image,
                answers: r.answer.map(OneOrMany::into_vec).unwrap_or_default(),
                dataset: r.dataset,
            })
        })
        .collect()
}
