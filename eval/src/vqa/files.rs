//! The three files the official VQA scorer reads: questions, annotations (ground truth) and results.
//!
//! Parsed from untyped JSON so that every problem names its file and field, and so that each ground-truth
//! answer keeps its whole dict: the scorer's leave-one-out compares answer dicts by equality of all their
//! fields, not by position.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// One ground-truth answer: the `answer` string plus the whole dict it came from (`answer_id`,
/// `answer_confidence`, anything else), used for the scorer's dict-equality leave-one-out.
#[derive(Debug, Clone, PartialEq)]
pub struct GtAnswer {
    pub answer: String,
    pub fields: Map<String, Value>,
}

impl GtAnswer {
    /// An answer dict as the official files have it.
    pub fn new(answer: &str, answer_id: i64) -> Self {
        let mut fields = Map::new();
        fields.insert("answer".into(), Value::from(answer));
        fields.insert("answer_confidence".into(), Value::from("yes"));
        fields.insert("answer_id".into(), Value::from(answer_id));
        GtAnswer { answer: answer.to_string(), fields }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VqaAnnotation {
    pub question_id: i64,
    pub question_type: String,
    pub answer_type: String,
    pub answers: Vec<GtAnswer>,
}

/// The annotation file (`v2_mscoco_val2014_annotations.json` layout). `source` names it in errors.
#[derive(Debug, Clone)]
pub struct VqaAnnotations {
    pub source: String,
    pub annotations: Vec<VqaAnnotation>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VqaPrediction {
    pub question_id: i64,
    pub answer: String,
}

/// A result file: `[{"question_id": int, "answer": str}, ...]`.
#[derive(Debug, Clone)]
pub struct VqaResults {
    pub source: String,
    pub predictions: Vec<VqaPrediction>,
}

/// The question file. Only `task_type` and, for multiple choice, the choices matter to the scorer.
#[derive(Debug, Clone)]
pub struct VqaQuestions {
    pub source: String,
    pub task_type: Option<String>,
    pub multiple_choices: HashMap<i64, Vec<String>>,
    pub question_ids: Vec<i64>,
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::json(path, e))
}

/// Typed access to untyped JSON, with errors of the form `file: annotations[3].answers[2].answer: ...`.
struct Fields<'a> {
    source: &'a str,
}

impl Fields<'_> {
    fn err(&self, field: &str, problem: impl Into<String>) -> Error {
        Error::field(self.source, field, problem)
    }
    fn object<'v>(&self, v: &'v Value, field: &str) -> Result<&'v Map<String, Value>> {
        v.as_object()
            .ok_or_else(|| self.err(field, format!("expected an object, found {}", kind(v))))
    }
    fn array<'v>(&self, v: &'v Value, field: &str) -> Result<&'v Vec<Value>> {
        v.as_array().ok_or_else(|| self.err(field, format!("expected an array, found {}", kind(v))))
    }
    fn get<'v>(&self, obj: &'v Map<String, Value>, key: &str, field: &str) -> Result<&'v Value> {
        obj.get(key).ok_or_else(|| self.err(&format!("{field}.{key}"), "missing"))
    }
    fn string(&self, obj: &Map<String, Value>, key: &str, field: &str) -> Result<String> {
        let v = self.get(obj, key, field)?;
        v.as_str().map(str::to_string).ok_or_else(|| {
            self.err(&format!("{field}.{key}"), format!("expected a string, found {}", kind(v)))
        })
    }
    fn int(&self, obj: &Map<String, Value>, key: &str, field: &str) -> Result<i64> {
        let v = self.get(obj, key, field)?;
        v.as_i64().ok_or_else(|| {
            self.err(&format!("{field}.{key}"), format!("expected an integer, found {}", kind(v)))
        })
    }
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() > 40 => "a string".into(),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

impl VqaAnnotations {
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_json(&path.display().to_string(), &read_json(path)?)
    }

    pub fn from_json(source: &str, root: &Value) -> Result<Self> {
        let f = Fields { source };
        let root_obj = f.object(root, "(top level)")?;
        let list = f.array(f.get(root_obj, "annotations", "(top level)")?, "annotations")?;
        let mut annotations = Vec::with_capacity(list.len());
        let mut seen = HashMap::new();
        for (i, item) in list.iter().enumerate() {
            let at = format!("annotations[{i}]");
            let obj = f.object(item, &at)?;
            let question_id = f.int(obj, "question_id", &at)?;
            // The VQA API would score a repeated id twice, the second time against answers it already
            // rewrote; no official file repeats one, so a repeat is treated as a broken file.
            if let Some(first) = seen.insert(question_id, i) {
                return Err(f.err(
                    &format!("{at}.question_id"),
                    format!("{question_id} repeats annotations[{first}]"),
                ));
            }
            let answers_at = format!("{at}.answers");
            let raw_answers = f.array(f.get(obj, "answers", &at)?, &answers_at)?;
            if raw_answers.is_empty() {
                return Err(f.err(&answers_at, "no answers: accuracy is undefined"));
            }
            let mut answers = Vec::with_capacity(raw_answers.len());
            for (j, a) in raw_answers.iter().enumerate() {
                let a_at = format!("{answers_at}[{j}]");
                let fields = f.object(a, &a_at)?;
                answers.push(GtAnswer {
                    answer: f.string(fields, "answer", &a_at)?,
                    fields: fields.clone(),
                });
            }
            annotations.push(VqaAnnotation {
                question_id,
                question_type: f.string(obj, "question_type", &at)?,
                answer_type: f.string(obj, "answer_type", &at)?,
                answers,
            });
        }
        Ok(VqaAnnotations { source: source.to_string(), annotations })
    }
}

impl VqaResults {
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_json(&path.display().to_string(), &read_json(path)?)
    }

    pub fn from_json(source: &str, root: &Value) -> Result<Self> {
        let f = Fields { source };
        let list = f.array(root, "(top level)")?;
        let mut predictions = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let at = format!("[{i}]");
            let obj = f.object(item, &at)?;
            predictions.push(VqaPrediction {
                question_id: f.int(obj, "question_id", &at)?,
                answer: f.string(obj, "answer", &at)?,
            });
        }
        Ok(VqaResults { source: source.to_string(), predictions })
    }

    /// In memory, e.g. straight from an evaluation loop.
    pub fn from_predictions(source: &str, predictions: Vec<VqaPrediction>) -> Self {
        VqaResults { source: source.to_string(), predictions }
    }
}

impl VqaQuestions {
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_json(&path.display().to_string(), &read_json(path)?)
    }

    pub fn from_json(source: &str, root: &Value) -> Result<Self> {
        let f = Fields { source };
        let root_obj = f.object(root, "(top level)")?;
        let task_type = match root_obj.get("task_type") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                return Err(f.err("task_type", format!("expected a string, found {}", kind(v))))
            }
        };
        let list = f.array(f.get(root_obj, "questions", "(top level)")?, "questions")?;
        let mut multiple_choices = HashMap::new();
        let mut question_ids = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let at = format!("questions[{i}]");
            let obj = f.object(item, &at)?;
            let question_id = f.int(obj, "question_id", &at)?;
            question_ids.push(question_id);
            if let Some(choices) = obj.get("multiple_choices") {
                let choices_at = format!("{at}.multiple_choices");
                let choices = f.array(choices, &choices_at)?;
                let choices = choices
                    .iter()
                    .enumerate()
                    .map(|(j, c)| {
                        c.as_str().map(str::to_string).ok_or_else(|| {
                            f.err(&format!("{choices_at}[{j}]"), "expected a string")
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                multiple_choices.insert(question_id, choices);
            }
        }
        Ok(VqaQuestions { source: source.to_string(), task_type, multiple_choices, question_ids })
    }

    pub fn is_multiple_choice(&self) -> bool {
        self.task_type.as_deref() == Some("Multiple Choice")
    }
}
