//! `blip2 export` end to end on the tiny fixtures: LAVIS `.pth` <-> HF directory round trips
//! keep every tensor, the exported directory scores exactly as the `.pth` on top of the HF
//! directory does, and bad input fails with one line naming the culprit.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Output;

use candle_core::{Device, Tensor};

use crate::common::*;

fn lavis_fixture() -> PathBuf {
    fixture("itm/lavis_stage1.pth")
}

fn read_pth(path: &Path) -> BTreeMap<String, Tensor> {
    candle_core::pickle::read_all_with_key(path, Some("model"))
        .unwrap_or_else(|e| panic!("{} does not read as a LAVIS checkpoint: {e}", path.display()))
        .into_iter()
        .collect()
}

fn read_safetensors(path: &Path) -> BTreeMap<String, Tensor> {
    load_tensors(path).into_iter().collect()
}

fn bytes(t: &Tensor) -> Vec<u8> {
    let mut b = Vec::new();
    t.write_bytes(&mut b).unwrap();
    b
}

/// Every tensor of `want` is in `got` under the same name with the same dtype, shape and bits;
/// `got` holds nothing else. Reports every difference at once.
fn assert_same_tensors(
    what: &str,
    got: &BTreeMap<String, Tensor>,
    want: &BTreeMap<String, Tensor>,
) {
    let mut bad = Vec::new();
    for (name, w) in want {
        match got.get(name) {
            None => bad.push(format!("{name} missing")),
            Some(g) if (g.dtype(), g.dims()) != (w.dtype(), w.dims()) => bad.push(format!(
                "{name}: {:?} {:?}, want {:?} {:?}",
                g.dtype(),
                g.dims(),
                w.dtype(),
                w.dims()
            )),
            Some(g) if bytes(g) != bytes(w) => bad.push(format!("{name}: values differ")),
            Some(_) => {}
        }
    }
    bad.extend(got.keys().filter(|k| !want.contains_key(*k)).map(|k| format!("{k} unexpected")));
    assert!(bad.is_empty(), "{what}: {}", bad.join("; "));
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "blip2 failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fails with exit status 1 and one `error:` line on stderr that contains every piece of `names`.
fn fails_naming(out: &Output, names: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "exit status; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in names {
        assert!(stderr.contains(n), "error names {n}: {stderr}");
    }
    stderr
}

fn lavis_to_hf(pth: &Path, vision: &Path, out: &Path) -> Output {
    blip2([
        os("export"),
        os("--lavis-checkpoint"),
        os(pth),
        os("--vision"),
        os(vision),
        os("--out"),
        os(out),
    ])
}

fn hf_to_lavis(model: &Path, pth: &Path) -> Output {
    blip2([os("export"), os("--model"), os(model), os("--to-lavis"), os(pth)])
}

fn score_json(extra: &[OsString]) -> Vec<u8> {
    let mut a = vec![os("score"), os("--json")];
    a.extend_from_slice(extra);
    a.extend(image_args(&images()));
    a.extend(text_args(&TEXTS));
    let out = blip2(&a);
    ok(&out);
    out.stdout
}

/// `.pth -> HF dir -> .pth` keeps the whole LAVIS state dict: every name (the tied decoder
/// aliases and the `position_ids` buffer too), dtype, shape and value.
#[test]
fn lavis_checkpoint_round_trips_through_an_hf_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    let back = tmp.path().join("back.pth");
    ok(&lavis_to_hf(&lavis_fixture(), &fixture("itm"), &hf));
    ok(&hf_to_lavis(&hf, &back));
    assert_same_tensors(
        "back.pth vs lavis_stage1.pth",
        &read_pth(&back),
        &read_pth(&lavis_fixture()),
    );

    // The directory opens alone: the ViT is the HF directory's, `temp` is LAVIS's.
    for f in ["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"] {
        assert!(hf.join(f).is_file(), "{f} written");
    }
    let exported = read_safetensors(&hf.join("model.safetensors"));
    let vit_source = read_safetensors(&fixture("itm/model.safetensors"));
    for (name, t) in vit_source.iter().filter(|(n, _)| {
        n.starts_with("vision_model.") && !n.starts_with("vision_model.post_layernorm.")
    }) {
        assert_eq!(bytes(&exported[name]), bytes(t), "{name}");
    }
    let temp = read_pth(&lavis_fixture())["temp"].to_scalar::<f32>().unwrap();
    assert_eq!(exported["temp"].to_scalar::<f32>().unwrap(), temp);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["ln_vision_eps"], serde_json::json!(1e-5));
}

/// The exported directory is the model `--lavis-checkpoint` builds: bit-identical scores.
#[test]
fn exported_directory_scores_exactly_as_the_checkpoint_on_the_hf_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    ok(&lavis_to_hf(&lavis_fixture(), &fixture("itm"), &hf));
    let exported = score_json(&[os("--model"), os(&hf)]);
    let on_top = score_json(&[
        os("--model"),
        os(fixture("itm")),
        os("--lavis-checkpoint"),
        os(lavis_fixture()),
    ]);
    assert_eq!(String::from_utf8_lossy(&exported), String::from_utf8_lossy(&on_top));
}

/// HF -> LAVIS -> HF keeps every tensor of the HF directory; `temp`, absent from HF
/// checkpoints, comes back as the 0.07 the loader would have used.
#[test]
fn hf_directory_round_trips_through_a_lavis_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let pth = tmp.path().join("itm.pth");
    let hf = tmp.path().join("hf");
    ok(&hf_to_lavis(&fixture("itm"), &pth));
    let lavis = read_pth(&pth);
    assert!(lavis.keys().all(|k| !k.starts_with("visual_encoder.")), "no frozen ViT in the .pth");
    assert!(
        lavis.contains_key("ln_vision.weight")
            && lavis.contains_key("Qformer.bert.embeddings.position_ids")
    );
    ok(&lavis_to_hf(&pth, &fixture("itm"), &hf));
    let mut want = read_safetensors(&fixture("itm/model.safetensors"));
    assert!(!want.contains_key("temp"));
    want.insert("temp".into(), Tensor::new(0.07f32, &Device::Cpu).unwrap());
    assert_same_tensors(
        "hf vs itm fixture",
        &read_safetensors(&hf.join("model.safetensors")),
        &want,
    );
}

/// Stage two: the projection goes out as LAVIS's `opt_proj`, without the frozen LLM, and comes
/// back as `language_projection` with the HF directory's LLM and tokenizers beside it.
#[test]
fn stage_two_directory_round_trips_through_a_lavis_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let pth = tmp.path().join("opt.pth");
    let hf = tmp.path().join("hf");
    ok(&hf_to_lavis(&fixture("opt"), &pth));
    let lavis = read_pth(&pth);
    assert!(lavis.contains_key("opt_proj.weight"), "{:?}", lavis.keys().collect::<Vec<_>>());
    assert!(lavis.keys().all(|k| !k.starts_with("language_") && !k.starts_with("opt_model.")));
    ok(&lavis_to_hf(&pth, &fixture("opt"), &hf));
    assert_same_tensors(
        "hf vs opt fixture",
        &read_safetensors(&hf.join("model.safetensors")),
        &read_safetensors(&fixture("opt/model.safetensors")),
    );
    for f in ["tokenizer.json", "qformer_tokenizer/tokenizer.json", "generation_config.json"] {
        assert_eq!(
            std::fs::read(hf.join(f)).unwrap(),
            std::fs::read(fixture("opt").join(f)).unwrap(),
            "{f} copied"
        );
    }
}

#[test]
fn missing_or_corrupt_checkpoints_fail_naming_the_file_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");

    let missing = tmp.path().join("nowhere.pth");
    fails_naming(&lavis_to_hf(&missing, &fixture("itm"), &out), &["nowhere.pth", "does not exist"]);

    let corrupt = tmp.path().join("corrupt.pth");
    std::fs::write(&corrupt, b"PK\x03\x04 this is not a zip archive").unwrap();
    fails_naming(&lavis_to_hf(&corrupt, &fixture("itm"), &out), &["corrupt.pth"]);

    // A zip that is not a PyTorch checkpoint, e.g. the right name on the wrong file.
    let truncated = tmp.path().join("truncated.pth");
    let whole = std::fs::read(lavis_fixture()).unwrap();
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    fails_naming(&lavis_to_hf(&truncated, &fixture("itm"), &out), &["truncated.pth"]);

    let err =
        fails_naming(&lavis_to_hf(&lavis_fixture(), &tmp.path().join("no-dir"), &out), &["no-dir"]);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!out.exists() && !tmp.path().join("hf.tmp").exists(), "nothing written");

    // A directory whose weights lack tensors: the model is refused by tensor name.
    let partial = tmp.path().join("partial");
    std::fs::create_dir(&partial).unwrap();
    std::fs::copy(fixture("itm/config.json"), partial.join("config.json")).unwrap();
    let mut tensors = load_tensors(&fixture("itm/model.safetensors"));
    tensors.remove("query_tokens");
    candle_core::safetensors::save(&tensors, partial.join("model.safetensors")).unwrap();
    let pth = tmp.path().join("partial.pth");
    fails_naming(&hf_to_lavis(&partial, &pth), &["partial", "query_tokens"]);
    assert!(!pth.exists() && !tmp.path().join("partial.pth.tmp").exists(), "nothing written");
}

#[test]
fn existing_outputs_are_replaced_only_with_force() {
    let tmp = tempfile::tempdir().unwrap();
    let pth = tmp.path().join("x.pth");
    std::fs::write(&pth, b"keep me").unwrap();
    fails_naming(&hf_to_lavis(&fixture("itm"), &pth), &["x.pth", "--force"]);
    assert_eq!(std::fs::read(&pth).unwrap(), b"keep me");
    ok(&blip2([
        os("export"),
        os("--model"),
        os(fixture("itm")),
        os("--to-lavis"),
        os(&pth),
        os("--force"),
    ]));
    assert!(read_pth(&pth).contains_key("query_tokens"));
}

#[test]
fn mixing_the_two_directions_is_a_usage_error() {
    let out = blip2([
        os("export"),
        os("--model"),
        os(fixture("itm")),
        os("--lavis-checkpoint"),
        os(lavis_fixture()),
    ]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    let out = blip2([os("export"), os("--to-lavis"), os("x.pth")]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
}
