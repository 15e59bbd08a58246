//! Normalisation and the Python string semantics under it, against CPython 3.11 running the LAVIS 1.0.2
//! scorer (`tests/fixtures/vqa-tricky/{normalization,unicode_tables}.json`, made by
//! tools/vqa_tricky_reference.py).

use std::path::Path;

use eval::pystr::{is_py_decimal_digit, is_py_space, py_lower};
use eval::vqa::{normalize_prediction, process_digit_article, process_punctuation};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vqa-tricky").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn every_string_normalises_like_the_scorer() {
    let rows = load("normalization.json");
    let rows = rows.as_array().unwrap();
    assert!(rows.len() > 1500);
    let mut failures = Vec::new();
    for row in rows {
        let input = row["input"].as_str().unwrap();
        let punct = process_punctuation(input);
        let got = [punct.clone(), process_digit_article(&punct), normalize_prediction(input)];
        for (got, key) in got.iter().zip(["punctuation", "digit_article", "prediction"]) {
            if got != row[key].as_str().unwrap() {
                failures.push(format!("{key}({input:?}) = {got:?}, scorer: {:?}", row[key]));
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

fn ranges(v: &Value) -> Vec<(u32, u32)> {
    let pair = |r: &Value| (r[0].as_u64().unwrap() as u32, r[1].as_u64().unwrap() as u32);
    v.as_array().unwrap().iter().map(pair).collect()
}

fn in_ranges(ranges: &[(u32, u32)], cp: u32) -> bool {
    ranges.iter().any(|&(lo, hi)| lo <= cp && cp <= hi)
}

#[test]
fn python_whitespace_digits_and_lower_on_every_code_point() {
    let tables = load("unicode_tables.json");
    let lower = tables["lower"].as_object().unwrap();
    let (space, digit) = (ranges(&tables["isspace"]), ranges(&tables["decimal_digit"]));
    let mut failures = Vec::new();
    for c in (0..0x110000u32).filter_map(char::from_u32) {
        let cp = c as u32;
        if is_py_space(c) != in_ranges(&space, cp) {
            failures.push(format!("isspace U+{cp:04X}"));
        }
        if is_py_decimal_digit(c) != in_ranges(&digit, cp) {
            failures.push(format!("\\d U+{cp:04X}"));
        }
        let single = c.to_string();
        let got = py_lower(&single);
        let want = lower.get(&cp.to_string()).and_then(Value::as_str).unwrap_or(&single);
        if got != want {
            failures.push(format!("lower U+{cp:04X}: {got:?}, Python {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
