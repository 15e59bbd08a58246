//! The official VQA scorer (salesforce-lavis 1.0.2 `vqa_eval.py`, run on
//! `tests/fixtures/vqa-official` by a LAVIS 1.0.2 reference script and on
//! `tests/fixtures/vqa-tricky` by `tools/vqa_tricky_reference.py`) against our port: every number of
//! both fixture sets must match exactly (both sides are rounded to 2 decimals the same way).

use std::path::{Path, PathBuf};

use eval::vqa::{
    vqa_accuracy, vqa_accuracy_with_questions, PythonSum, VqaAccuracy, VqaAnnotations,
    VqaQuestions, VqaResults,
};
use serde_json::Value;

fn fixture(set: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(set)
}

fn score(set: &str, expected: &str, summation: PythonSum) -> (VqaAccuracy, Value) {
    let dir = fixture(set);
    let questions = VqaQuestions::read(&dir.join("questions.json")).unwrap();
    let annotations = VqaAnnotations::read(&dir.join("annotations.json")).unwrap();
    let results = VqaResults::read(&dir.join("results.json")).unwrap();
    let acc = vqa_accuracy_with_questions(&questions, &annotations, &results, summation).unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(expected)).unwrap()).unwrap();
    (acc, expected)
}

fn assert_matches(acc: &VqaAccuracy, expected: &Value) {
    assert_eq!(acc.overall, expected["overall"].as_f64().unwrap(), "overall");
    let want_types = expected["perAnswerType"].as_object().unwrap();
    assert_eq!(acc.per_answer_type.0.len(), want_types.len());
    for (k, v) in want_types {
        assert_eq!(acc.per_answer_type.get(k), v.as_f64(), "perAnswerType {k}");
    }
    if let Some(want_q_types) = expected.get("perQuestionType").and_then(Value::as_object) {
        assert_eq!(acc.per_question_type.0.len(), want_q_types.len());
        for (k, v) in want_q_types {
            assert_eq!(acc.per_question_type.get(k), v.as_f64(), "perQuestionType {k}");
        }
    }
    let want_q = expected["perQuestion"].as_object().unwrap();
    assert_eq!(acc.per_question.len(), want_q.len());
    let notes = expected.get("notes");
    for (qid, got) in &acc.per_question {
        let want = want_q[&qid.to_string()].as_f64().unwrap();
        let why = notes.and_then(|n| n.get(qid.to_string())).and_then(Value::as_str).unwrap_or("");
        assert_eq!(*got, want, "question {qid} ({why})");
    }
}

#[test]
fn official_fixture_every_number() {
    let (acc, expected) = score("vqa-official", "expected.json", PythonSum::LeftFold);
    assert_matches(&acc, &expected);
}

#[test]
fn tricky_fixture_every_number() {
    let (acc, expected) = score("vqa-tricky", "expected.json", PythonSum::LeftFold);
    assert_matches(&acc, &expected);
    // Key order follows first appearance in the annotation file, like the scorer's dicts.
    let json = serde_json::to_string(&acc).unwrap();
    assert!(json.starts_with(r#"{"overall":"#), "{json}");
}

/// The official number itself depends on the Python running the scorer (3.11: 55.63, 3.12: 55.62).
#[test]
fn summation_fixture_matches_each_python_version() {
    for (expected, summation) in
        [("expected_py311.json", PythonSum::LeftFold), ("expected_py312.json", PythonSum::Neumaier)]
    {
        let (acc, want) = score("vqa-summation", expected, summation);
        assert_matches(&acc, &want);
    }
    let (a, _) = score("vqa-summation", "expected_py311.json", PythonSum::LeftFold);
    let (b, _) = score("vqa-summation", "expected_py311.json", PythonSum::Neumaier);
    assert_ne!(a.overall, b.overall);
}

fn results_json(v: Value) -> VqaResults {
    VqaResults::from_json("r.json", &v).unwrap()
}

fn annotations_2() -> VqaAnnotations {
    let ans: Vec<Value> =
        (1..=10).map(|i| serde_json::json!({"answer": "yes", "answer_id": i})).collect();
    VqaAnnotations::from_json(
        "a.json",
        &serde_json::json!({"annotations": [
            {"question_id": 1, "question_type": "is", "answer_type": "yes/no", "answers": ans},
            {"question_id": 2, "question_type": "is", "answer_type": "yes/no", "answers": ans},
        ]}),
    )
    .unwrap()
}

#[test]
fn results_must_cover_exactly_the_annotated_questions() {
    let anns = annotations_2();
    let missing = vqa_accuracy(
        &anns,
        &results_json(serde_json::json!([{"question_id": 1, "answer": "yes"}])),
    );
    let msg = missing.unwrap_err().to_string();
    assert!(
        msg.contains("r.json") && msg.contains("question_id 2") && msg.contains("a.json"),
        "{msg}"
    );
    let extra = vqa_accuracy(
        &anns,
        &results_json(serde_json::json!([
            {"question_id": 1, "answer": "yes"}, {"question_id": 2, "answer": "yes"}, {"question_id": 3, "answer": "x"}
        ])),
    );
    let msg = extra.unwrap_err().to_string();
    assert!(msg.contains("[2].question_id 3") && msg.contains("a.json"), "{msg}");
    // A repeated result keeps its last answer, as VQA.loadRes does.
    let acc = vqa_accuracy(
        &anns,
        &results_json(serde_json::json!([
            {"question_id": 1, "answer": "yes"}, {"question_id": 2, "answer": "yes"}, {"question_id": 1, "answer": "no"}
        ])),
    )
    .unwrap();
    assert_eq!(acc.per_question, [(1, 0.0), (2, 100.0)]);
    assert_eq!(acc.overall, 50.0);
}

#[test]
fn malformed_files_name_the_field() {
    let e = VqaResults::from_json("r.json", &serde_json::json!([{"answer": "yes"}]))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "r.json: [0].question_id: missing");
    let e = VqaResults::from_json(
        "r.json",
        &serde_json::json!([{"question_id": "7", "answer": "yes"}]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("r.json: [0].question_id: expected an integer"), "{e}");
    let e = VqaResults::from_json("r.json", &serde_json::json!([{"question_id": 7, "answer": 3}]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("r.json: [0].answer: expected a string"), "{e}");
    let e = VqaAnnotations::from_json(
        "a.json",
        &serde_json::json!({"annotations": [{"question_id": 1, "question_type": "is", "answer_type": "yes/no",
            "answers": [{"answer": "yes"}, {"answer_id": 2}]}]}),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(e, "a.json: annotations[0].answers[1].answer: missing");
    let e = VqaAnnotations::from_json("a.json", &serde_json::json!([])).unwrap_err().to_string();
    assert!(e.starts_with("a.json: (top level): expected an object"), "{e}");
    let e = VqaAnnotations::read(Path::new("/nonexistent/a.json")).unwrap_err().to_string();
    assert!(e.starts_with("/nonexistent/a.json:"), "{e}");
}

#[test]
fn multiple_choice_answers_must_be_choices() {
    let questions = VqaQuestions::from_json(
        "q.json",
        &serde_json::json!({"task_type": "Multiple Choice", "questions": [
            {"question_id": 1, "multiple_choices": ["yes", "no"]}, {"question_id": 2, "multiple_choices": ["yes"]}]}),
    )
    .unwrap();
    let res = results_json(
        serde_json::json!([{"question_id": 1, "answer": "yes"}, {"question_id": 2, "answer": "Yes"}]),
    );
    let e = vqa_accuracy_with_questions(&questions, &annotations_2(), &res, PythonSum::LeftFold)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[1].answer \"Yes\"") && e.contains("q.json"), "{e}");
}
