//! VQA accuracy exactly as the official scorer (LAVIS `vqa_eval.py`, VQA API `loadRes` + `evaluate`)
//! computes it, down to the float operations that decide the printed digits.

use std::collections::{HashMap, HashSet};

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::files::{GtAnswer, VqaAnnotations, VqaQuestions, VqaResults};
use super::normalize::{normalize_ground_truth, normalize_prediction};
use crate::error::{Error, Result};
use crate::pystr::{py_round2, py_sum, PyNum, PythonSum};

/// Scores in percent, rounded to 2 decimals like the official code, keyed in first-appearance order.
#[derive(Debug, Clone, PartialEq)]
pub struct VqaAccuracy {
    pub overall: f64,
    pub per_answer_type: OrderedScores,
    pub per_question_type: OrderedScores,
    /// Per question id, in annotation order.
    pub per_question: Vec<(i64, f64)>,
}

/// `(key, value)` pairs serialised as a JSON object in this order (the scorer's dicts keep insertion order).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OrderedScores(pub Vec<(String, f64)>);

impl OrderedScores {
    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

impl Serialize for OrderedScores {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Serialize for VqaAccuracy {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let per_question =
            OrderedScores(self.per_question.iter().map(|(q, v)| (q.to_string(), *v)).collect());
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("overall", &self.overall)?;
        map.serialize_entry("perAnswerType", &self.per_answer_type)?;
        map.serialize_entry("perQuestionType", &self.per_question_type)?;
        map.serialize_entry("perQuestion", &per_question)?;
        map.end()
    }
}

/// Accuracy of one prediction against one question's ground truth, in [0, 1], unrounded.
///
/// If the raw answers are not all identical they get the punctuation pass (and nothing else). Then for each
/// answer j, `acc_j = min(1, #{other answers equal to the prediction} / 3)`, where "other" means every answer
/// dict that is not *equal* to dict j — equal dicts (same answer, id, confidence) drop out together. The result is
/// the mean of the `acc_j`, summed as CPython's `sum` does (see [`PythonSum`]).
pub fn question_accuracy(answers: &[GtAnswer], prediction: &str, summation: PythonSum) -> f64 {
    let predicted = normalize_prediction(prediction);
    answer_accuracy(answers, &predicted, summation)
}

fn answer_accuracy(answers: &[GtAnswer], predicted: &str, summation: PythonSum) -> f64 {
    let first = answers.first().map(|a| a.answer.as_str());
    let all_same = answers.iter().all(|a| Some(a.answer.as_str()) == first);
    let processed: Vec<String> = if all_same {
        answers.iter().map(|a| a.answer.clone()).collect()
    } else {
        answers.iter().map(|a| normalize_ground_truth(&a.answer)).collect()
    };
    // The processed answer replaces "answer" inside the dict before dicts are compared.
    let dicts: Vec<Map<String, Value>> = answers
        .iter()
        .zip(&processed)
        .map(|(a, p)| {
            let mut d = a.fields.clone();
            d.insert("answer".into(), Value::from(p.as_str()));
            d
        })
        .collect();
    let gt_acc: Vec<PyNum> = dicts
        .iter()
        .map(|dj| {
            let matching = dicts
                .iter()
                .zip(&processed)
                .filter(|(dk, pk)| !py_object_eq(dk, dj) && pk.as_str() == predicted)
                .count();
            // `min(1, float(m) / 3)` keeps the int 1 once m >= 3, which matters to 3.12's `sum`.
            if matching >= 3 {
                PyNum::Int(1)
            } else {
                PyNum::Float(matching as f64 / 3.0)
            }
        })
        .collect();
    py_sum(gt_acc, summation) / answers.len() as f64
}

/// Python `==` on JSON-decoded values: numbers compare by value across int and float (`1 == 1.0`),
/// booleans are the integers 0 and 1.
fn py_value_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_value_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => py_object_eq(x, y),
        (Value::Bool(_) | Value::Number(_), Value::Bool(_) | Value::Number(_)) => {
            match (py_number(a), py_number(b)) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            }
        }
        _ => false,
    }
}

fn py_object_eq(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| py_value_eq(v, w)))
}

/// A number Python compares exactly: integers as integers, floats as floats; an integral float equals the
/// integer of the same value.
#[derive(PartialEq)]
enum PyNumber {
    Int(i128),
    Float(f64),
}

fn py_number(v: &Value) -> Option<PyNumber> {
    let n = match v {
        Value::Bool(b) => return Some(PyNumber::Int(*b as i128)),
        Value::Number(n) => n,
        _ => return None,
    };
    if let Some(i) = n.as_i64() {
        return Some(PyNumber::Int(i as i128));
    }
    if let Some(u) = n.as_u64() {
        return Some(PyNumber::Int(u as i128));
    }
    let f = n.as_f64()?;
    // i128 holds every integral double below 2^127, far beyond any JSON id.
    if f.fract() == 0.0 && f.abs() < 1.7e38 {
        Some(PyNumber::Int(f as i128))
    } else {
        Some(PyNumber::Float(f))
    }
}

/// Percent of a list of per-question accuracies, as `round(100 * float(sum(accs)) / len(accs), 2)`.
fn percent(accs: &[f64], summation: PythonSum) -> f64 {
    let sum = py_sum(accs.iter().map(|&a| PyNum::Float(a)), summation);
    py_round2(100.0 * sum / accs.len() as f64)
}

fn group_percent(groups: Vec<(String, Vec<f64>)>, summation: PythonSum) -> OrderedScores {
    OrderedScores(groups.into_iter().map(|(k, accs)| (k, percent(&accs, summation))).collect())
}

/// Score a result set against the annotations the way `VQA.loadRes` + `VQAEval.evaluate` do:
/// the result question ids must be exactly the annotation question ids (a repeated result keeps its last
/// answer), questions are averaged in annotation order. Sums as CPython <= 3.11; see [`vqa_accuracy_with`].
pub fn vqa_accuracy(annotations: &VqaAnnotations, results: &VqaResults) -> Result<VqaAccuracy> {
    vqa_accuracy_with(annotations, results, PythonSum::LeftFold)
}

/// [`vqa_accuracy`] with the float summation of a chosen CPython version.
pub fn vqa_accuracy_with(
    annotations: &VqaAnnotations,
    results: &VqaResults,
    summation: PythonSum,
) -> Result<VqaAccuracy> {
    let anns = &annotations.annotations;
    if anns.is_empty() {
        return Err(Error::field(
            &annotations.source,
            "annotations",
            "empty: accuracy is undefined",
        ));
    }
    let known: HashSet<i64> = anns.iter().map(|a| a.question_id).collect();
    let mut answer_of: HashMap<i64, &str> = HashMap::with_capacity(results.predictions.len());
    for (i, p) in results.predictions.iter().enumerate() {
        if !known.contains(&p.question_id) {
            return Err(Error::Mismatch(format!(
                "{}: [{i}].question_id {} is not a question of {}",
                results.source, p.question_id, annotations.source
            )));
        }
        answer_of.insert(p.question_id, p.answer.as_str());
    }
    let missing: Vec<i64> =
        anns.iter().map(|a| a.question_id).filter(|q| !answer_of.contains_key(q)).collect();
    if let Some(first) = missing.first() {
        return Err(Error::Mismatch(format!(
            "{}: no answer for question_id {first} of {} ({} of {} questions unanswered)",
            results.source,
            annotations.source,
            missing.len(),
            anns.len()
        )));
    }

    let mut all = Vec::with_capacity(anns.len());
    let mut by_answer_type: Vec<(String, Vec<f64>)> = Vec::new();
    let mut by_question_type: Vec<(String, Vec<f64>)> = Vec::new();
    let mut per_question = Vec::with_capacity(anns.len());
    for ann in anns {
        let acc = question_accuracy(&ann.answers, answer_of[&ann.question_id], summation);
        all.push(acc);
        push_group(&mut by_answer_type, &ann.answer_type, acc);
        push_group(&mut by_question_type, &ann.question_type, acc);
        per_question.push((ann.question_id, py_round2(100.0 * acc)));
    }
    Ok(VqaAccuracy {
        overall: percent(&all, summation),
        per_answer_type: group_percent(by_answer_type, summation),
        per_question_type: group_percent(by_question_type, summation),
        per_question,
    })
}

fn push_group(groups: &mut Vec<(String, Vec<f64>)>, key: &str, acc: f64) {
    match groups.iter_mut().find(|(k, _)| k == key) {
        Some((_, accs)) => accs.push(acc),
        None => groups.push((key.to_string(), vec![acc])),
    }
}

/// [`vqa_accuracy`] plus the question-file check `loadRes` makes: for a "Multiple Choice" task every
/// predicted answer must be one of the question's `multiple_choices`.
pub fn vqa_accuracy_with_questions(
    questions: &VqaQuestions,
    annotations: &VqaAnnotations,
    results: &VqaResults,
    summation: PythonSum,
) -> Result<VqaAccuracy> {
    if questions.is_multiple_choice() {
        for (i, p) in results.predictions.iter().enumerate() {
            let choices = questions.multiple_choices.get(&p.question_id).ok_or_else(|| {
                Error::Mismatch(format!(
                    "{}: question_id {} (answered in {} [{i}]) has no multiple_choices",
                    questions.source, p.question_id, results.source
                ))
            })?;
            if !choices.contains(&p.answer) {
                return Err(Error::Mismatch(format!(
                    "{}: [{i}].answer {:?} is not one of the multiple_choices of question_id {} in {}",
                    results.source, p.answer, p.question_id, questions.source
                )));
            }
        }
    }
    vqa_accuracy_with(annotations, results, summation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gt(answers: &[&str]) -> Vec<GtAnswer> {
        answers.iter().enumerate().map(|(i, a)| GtAnswer::new(a, i as i64 + 1)).collect()
    }

    // Closed form of the official scorer's leave-one-out (VQA API `vqaEval.py` `evaluate`: the
    // mean over the 10 GT answers of min(1, matches among the other 9 / 3)), distinct answer ids:
    // m = 0, 1, 2, 3, >=4 matches -> 0, 0.3, 0.6, 0.9, 1.0.
    #[test]
    fn leave_one_out_closed_form() {
        for (m, want) in [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)] {
            let mut answers = vec!["cat"; m];
            answers.resize(10, "dog");
            let acc = question_accuracy(&gt(&answers), "cat", PythonSum::LeftFold);
            assert!((acc - want).abs() < 1e-12, "m={m}: {acc}");
        }
    }

    #[test]
    fn equal_dicts_leave_together() {
        let same: Vec<GtAnswer> = (0..10).map(|_| GtAnswer::new("yes", 1)).collect();
        assert_eq!(question_accuracy(&same, "yes", PythonSum::LeftFold), 0.0);
        let mut float_id = gt(&["yes", "yes", "yes", "no", "no", "no", "no", "no", "no", "no"]);
        float_id[1].fields.insert("answer_id".into(), serde_json::json!(1.0));
        // dicts 0 and 1 are equal in Python (1 == 1.0): each of them sees only one other "yes".
        let want = (2.0 * (1.0 / 3.0) + 2.0 / 3.0 + 7.0) / 10.0;
        assert!((question_accuracy(&float_id, "yes", PythonSum::LeftFold) - want).abs() < 1e-12);
    }
}
