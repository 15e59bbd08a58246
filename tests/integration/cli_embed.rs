//! `blip2 embed` against HF `Blip2ForImageTextRetrieval` embeddings
//! (tests/fixtures/hf-tiny/itm/expected.safetensors `image_embeds` [4, Q, E], `text_embeds` [5, E]).

use crate::common::*;

#[test]
fn embeddings_match_hf() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.safetensors");
    let mut a = vec![os("embed"), os("--model"), os(fixture("itm")), os("--out"), os(&out)];
    a.extend(image_args(&images()));
    a.extend(text_args(&TEXTS));
    let run = blip2(&a);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    let got = load_tensors(&out);
    let want = load_tensors(&fixture("itm/expected.safetensors"));
    let mut bad = Vec::new();
    for name in ["image_embeds", "text_embeds"] {
        assert_eq!(got[name].dims(), want[name].dims(), "{name} shape");
        // Per row, so that a failure says which image or text is off.
        for i in 0..got[name].dim(0).unwrap() {
            let d = max_abs_diff(&got[name].get(i).unwrap(), &want[name].get(i).unwrap());
            if d > ATOL {
                bad.push(format!("{name}[{i}]: max abs diff {d:.2e}"));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("; "));

    // Metadata names the inputs in order.
    let bytes = std::fs::read(&out).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().expect("metadata");
    let texts: Vec<String> = serde_json::from_str(&meta["texts"]).unwrap();
    assert_eq!(texts, TEXTS);
    let imgs: Vec<String> = serde_json::from_str(&meta["images"]).unwrap();
    assert_eq!(imgs.len(), 4);
    assert!(imgs[2].ends_with("img2.png"));
}

#[test]
fn text_only_writes_only_text_embeds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.safetensors");
    let mut a = vec![os("embed"), os("--model"), os(fixture("itm")), os("--out"), os(&out)];
    a.extend(text_args(&TEXTS[..2]));
    let run = blip2(&a);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let got = load_tensors(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(got["text_embeds"].dims(), &[2, 16]);
}
