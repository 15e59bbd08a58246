//! Fuzzing the annotation readers: thousands of seeded mutations of valid files (bytes, and
//! JSON values with fields removed or retyped) must each give Ok or a `DataError` naming the
//! file, never a panic.

use crate::fuzz;

use std::path::{Path, PathBuf};

use datasets::formats::*;
use datasets::DataError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

const ITERATIONS: usize = 300;

/// Writes each input to one temp file and runs `read` on it; the error must name the file.
fn file_check<'a, T>(
    path: &'a Path,
    read: impl Fn(&Path) -> Result<T, DataError> + 'a,
) -> impl FnMut(&[u8]) -> Result<(), String> + 'a {
    move |bytes: &[u8]| {
        std::fs::write(path, bytes).unwrap();
        match read(path) {
            Ok(_) => Ok(()),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("input.dat"), "error does not name the file: {msg}");
                Err(msg)
            }
        }
    }
}

/// Structural mutants of a JSON document: a field removed, a value replaced by one of another
/// type, a list emptied. Serialized back to bytes.
fn json_mutants(doc: &Value, n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let replacements = [
        Value::Null,
        Value::Bool(true),
        serde_json::json!(-1),
        serde_json::json!(1.5),
        serde_json::json!(18446744073709551615u64),
        serde_json::json!(""),
        serde_json::json!("x".repeat(10_000)),
        serde_json::json!("\u{0}\u{202e}\u{fffd}👍🏽\u{301}"),
        serde_json::json!([]),
        serde_json::json!({}),
        serde_json::json!([1, "a", null]),
    ];
    (0..n)
        .map(|_| {
            let mut v = doc.clone();
            edit_random_node(&mut v, &replacements, &mut rng);
            serde_json::to_vec(&v).unwrap()
        })
        .collect()
}

/// Walks to a random node, then removes a key, empties a list or replaces the value.
fn edit_random_node(node: &mut Value, replacements: &[Value], rng: &mut ChaCha8Rng) {
    let deeper = rng.random_bool(0.7);
    match node {
        Value::Array(a) if deeper && !a.is_empty() => {
            let i = rng.random_range(0..a.len());
            edit_random_node(&mut a[i], replacements, rng)
        }
        Value::Object(o) if deeper && !o.is_empty() => {
            let i = rng.random_range(0..o.len());
            edit_random_node(o.values_mut().nth(i).unwrap(), replacements, rng)
        }
        Value::Object(o) if !o.is_empty() && rng.random_bool(0.5) => {
            let i = rng.random_range(0..o.len());
            let k = o.keys().nth(i).unwrap().clone();
            o.remove(&k);
        }
        Value::Array(a) if rng.random_bool(0.3) => a.clear(),
        other => *other = replacements[rng.random_range(0..replacements.len())].clone(),
    }
}

fn json_seeds(doc: &Value, seed: u64) -> Vec<Vec<u8>> {
    let mut out = vec![serde_json::to_vec_pretty(doc).unwrap()];
    out.extend(json_mutants(doc, 100, seed));
    out
}

struct Dir {
    _tmp: tempfile::TempDir,
    file: PathBuf,
}

fn dir() -> Dir {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("input.dat");
    Dir { _tmp: tmp, file }
}

/// Every structural mutant and every byte mutant: none may panic. Returns the accepted count.
fn run_json<T>(
    name: &str,
    doc: Value,
    seed: u64,
    read: impl Fn(&Path) -> Result<T, DataError>,
) -> usize {
    let d = dir();
    let mut check = file_check(&d.file, read);
    let mutants = json_seeds(&doc, seed);
    // Structural mutants are inputs in their own right (Ok or Err; never a panic) ...
    let mut accepted = 0;
    for (i, m) in mutants.iter().enumerate() {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(m)));
        match r {
            Ok(Ok(())) => accepted += 1,
            Ok(Err(_)) => {}
            Err(_) => {
                panic!("{name}: structural mutant {i} panicked: {}", String::from_utf8_lossy(m))
            }
        }
    }
    assert!(accepted < mutants.len(), "{name}: no structural mutant was refused");
    // ... then byte-level mutation of the valid document.
    fuzz::fuzz(name, seed, &mutants[..1], ITERATIONS, check) + accepted
}

#[test]
fn karpathy_train_and_eval() {
    let train = serde_json::json!([
        {"caption": "A cat.", "image": "train2014/a.jpg", "image_id": "coco_9"},
        {"caption": ["Another cat", "a third"], "image": "train2014/a.jpg", "image_id": 9},
        {"caption": "A dog", "image": "val2014/b.jpg"}
    ]);
    run_json("karpathy train", train, 1, |p| read_karpathy_train(p, Path::new("/imgs")));
    let eval = serde_json::json!([
        {"image": "val2014/COCO_val2014_000000391895.jpg", "caption": ["a", "b"]},
        {"image": "x.png", "caption": "c"}
    ]);
    run_json("karpathy eval", eval, 2, read_karpathy_eval);
}

#[test]
fn vqa_official_questions_and_annotations() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vqa-official");
    let q: Value =
        serde_json::from_slice(&std::fs::read(root.join("questions.json")).unwrap()).unwrap();
    let a: Value =
        serde_json::from_slice(&std::fs::read(root.join("annotations.json")).unwrap()).unwrap();
    // Keep the documents small so that thousands of parses stay fast.
    let small = |mut v: Value, key: &str| {
        v[key].as_array_mut().unwrap().truncate(3);
        v
    };
    let (q, a) = (small(q, "questions"), small(a, "annotations"));
    let ann_path = dir();
    std::fs::write(&ann_path.file, serde_json::to_vec(&a).unwrap()).unwrap();
    run_json("vqa questions", q.clone(), 3, |p| read_vqa_official(p, None));
    run_json("vqa questions+annotations", q.clone(), 4, |p| {
        read_vqa_official(p, Some(&ann_path.file))
    });
    // Mutated annotations against the valid questions.
    let q_path = dir();
    std::fs::write(&q_path.file, serde_json::to_vec(&q).unwrap()).unwrap();
    run_json("vqa annotations", a, 5, |p| read_vqa_official(&q_path.file, Some(p)));
}

#[test]
fn lavis_vqa_gqa_nocaps_capfilt() {
    let lavis = serde_json::json!([
        {"question_id": 1, "question": "what?", "image": "a.jpg", "answer": ["x", "x", "y"], "dataset": "vqa"},
        {"question_id": "2", "question": "why?", "image": "b.jpg", "answer": "z"},
        {"question_id": 3, "question": "who?", "image": "c.jpg"}
    ]);
    run_json("lavis vqa", lavis, 6, read_lavis_vqa);
    let gqa_official = serde_json::json!({
        "201": {"question": "is it red?", "imageId": "n1", "answer": "yes"},
        "202": {"question": "what?", "imageId": "n2"}
    });
    run_json("gqa official", gqa_official, 7, read_gqa);
    let gqa_lavis = serde_json::json!([
        {"image": "n1.jpg", "question": "q", "question_id": "201", "answer": "yes"},
        {"image": "n2.jpg", "question": "q", "question_id": 202}
    ]);
    run_json("gqa lavis", gqa_lavis, 8, read_gqa);
    let nocaps =
        serde_json::json!([{"image": "a.jpg", "img_id": 0}, {"image": "b.jpg", "img_id": 7}]);
    run_json("nocaps", nocaps, 9, read_nocaps);
    let capfilt = serde_json::json!([
        {"url": "http://x/a.jpg", "caption": "a"},
        {"image": "b.jpg", "caption": "b"}
    ]);
    run_json("capfilt", capfilt, 10, |p| read_capfilt(p, Path::new("/imgs")));
}

#[test]
fn pairs_jsonl() {
    let d = dir();
    let seeds = vec![
        b"{\"image_path\": \"a.jpg\", \"caption\": \"a cat\"}\n\n{\"image_path\": \"b.jpg\", \"caption\": \"\"}\n"
            .to_vec(),
    ];
    let check = file_check(&d.file, |p| read_pairs_jsonl(p, Path::new("/imgs")));
    fuzz::fuzz("pairs jsonl", 11, &seeds, ITERATIONS, check);
}

#[cfg(feature = "tables")]
#[test]
fn csv_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("input.csv");
    let seeds = vec![
        b"key,url,caption,status\n000,http://x/a.jpg,a cat,success\n001,http://x/b.jpg,,failed_to_download\n002,,\"quoted, caption\",success\n"
            .to_vec(),
    ];
    let check = |bytes: &[u8]| {
        std::fs::write(&file, bytes).unwrap();
        read_table(&file, "caption").map(|_| ()).map_err(|e| {
            let msg = e.to_string();
            assert!(msg.contains("input.csv"), "error does not name the file: {msg}");
            msg
        })
    };
    fuzz::fuzz("csv table", 12, &seeds, 200, check);
}
