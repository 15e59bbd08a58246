//! `[[data.sources]]`: webdataset shards indexed by seeking and read in place (the same pixels
//! as the bytes decoded directly), samples without an image or a caption and a shard cut short
//! left out by reason, Karpathy + webdataset mixed by weight.

use std::path::Path;

use datasets::formats::webdataset::{index_shard, write_shard};
use datasets::image::ImageProcessorConfig;
use datasets::sources::{open_source, read_source, Mixture, SourceItems, SourceKind, SourceSpec};
use datasets::synth::{generate, SynthConfig};
use datasets::text::CaptionCleaner;
use datasets::{ImageSource, ImageTextItem, Loader, LoaderConfig, LoaderState};

use crate::common::png;

/// A shard of `n` good samples (jpg-named PNG + json caption, or png + txt), one without an
/// image and one without a caption; returns the good samples' (key, bytes, caption).
pub fn shard(path: &Path, n: usize) -> Vec<(String, Vec<u8>, String)> {
    let scenes =
        generate(&SynthConfig { images: n, seed: 3, image_size: 20, ..Default::default() });
    let mut members = Vec::new();
    let mut good = Vec::new();
    for (i, s) in scenes.iter().enumerate() {
        let key = format!("{i:09}");
        let bytes = png(&s.scene.render());
        let caption = s.captions[0].clone();
        let meta = serde_json::json!({"caption": caption, "status": "success"}).to_string();
        let m = if i % 2 == 0 {
            vec![("jpg".to_string(), bytes.clone()), ("json".to_string(), meta.into_bytes())]
        } else {
            vec![
                ("png".to_string(), bytes.clone()),
                ("txt".to_string(), caption.clone().into_bytes()),
            ]
        };
        members.push((key.clone(), m));
        good.push((key, bytes, caption));
    }
    members.push(("no_image".into(), vec![("txt".into(), b"a caption".to_vec())]));
    members.push(("no_caption".into(), vec![("jpg".into(), good[0].1.clone())]));
    write_shard(path, &members).unwrap();
    good
}

pub fn config() -> LoaderConfig {
    LoaderConfig {
        batch_size: 4,
        image: ImageProcessorConfig::square(16),
        caption: CaptionCleaner::verbatim(),
        ..LoaderConfig::default()
    }
}

pub fn webdataset(urls: String, weight: f64) -> SourceSpec {
    SourceSpec {
        kind: SourceKind::Webdataset,
        urls: Some(urls),
        annotations: None,
        path: None,
        images: None,
        weight,
    }
}

#[test]
fn shard_members_read_in_place_give_the_pixels_of_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let good = shard(&dir.path().join("00000.tar"), 6);
    let read =
        read_source(&webdataset(format!("{}/{{00000..00000}}.tar", dir.path().display()), 1.0))
            .unwrap();
    assert_eq!(read.items.len(), 6);
    assert_eq!(read.skipped_total(), 2);
    assert_eq!(read.skipped["no image member"], 1);
    assert_eq!(read.skipped["no caption (.json caption or .txt)"], 1);
    let captions: Vec<&str> = read.items.iter().map(|i| i.caption.as_str()).collect();
    assert_eq!(captions, good.iter().map(|g| g.2.as_str()).collect::<Vec<_>>());
    // In place versus from the bytes: the same batch.
    let in_place = Loader::without_tokenizer(read.items.clone(), config());
    let bytes: Vec<ImageTextItem> = read
        .items
        .iter()
        .zip(&good)
        .map(|(it, g)| ImageTextItem { image: ImageSource::Bytes(g.1.clone()), ..it.clone() })
        .collect();
    let direct = Loader::without_tokenizer(bytes, config());
    let at = LoaderState { seed: 0, epoch: 0, position: 0 };
    for (a, b) in in_place.epoch(at).zip(direct.epoch(at)) {
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.skipped.is_empty());
        assert_eq!(a.pixel_values, b.pixel_values);
    }
}

#[test]
fn a_shard_cut_short_keeps_what_came_before_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.tar");
    shard(&full, 6);
    let bytes = std::fs::read(&full).unwrap();
    let (whole, _) = index_shard(&full).unwrap();
    // Cut inside the image of the fourth sample.
    let (offset, len) = whole[3].image.unwrap();
    let cut = dir.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..(offset + len / 2) as usize]).unwrap();
    // A shard missing from the download is left out by name; the others read.
    let missing = dir.path().join("missing.tar");
    let urls = format!("{}::{}", cut.display(), missing.display());
    let read = read_source(&webdataset(urls, 1.0)).unwrap();
    assert_eq!(read.items.len(), 3);
    let gone = read.skipped_keys.iter().find(|s| s.key == "missing.tar").unwrap();
    assert!(gone.reason.starts_with("shard unreadable") && gone.reason.contains("missing.tar"));
    let (reason, n) = read.skipped.iter().find(|(r, _)| r.starts_with("shard cut")).unwrap();
    assert!(*n == 1, "{reason}");
    assert!(read.skipped_keys[0].key.starts_with("cut.tar"));
}

#[test]
fn a_mixture_reads_an_epoch_over_both_sources_by_weight() {
    let dir = tempfile::tempdir().unwrap();
    shard(&dir.path().join("a.tar"), 4);
    let a = read_source(&webdataset(dir.path().join("a.tar").display().to_string(), 3.0)).unwrap();
    let streamed =
        open_source(&webdataset(dir.path().join("a.tar").display().to_string(), 1.0), 2).unwrap().0;
    let mixture =
        Mixture::new(vec![(SourceItems::Listed(a.items.clone()), 3.0), (streamed, 1.0)]).unwrap();
    let loader = Loader::mixed(mixture, None, config());
    let batches: Vec<_> =
        loader.epoch(LoaderState { seed: 1, epoch: 0, position: 0 }).map(|b| b.unwrap()).collect();
    let ids: Vec<u64> = batches.iter().flat_map(|b| b.image_ids.clone()).collect();
    assert_eq!(ids.len(), 8);
    // The streamed source's ids follow the listed one's: the two copies of a sample differ.
    assert!(ids.iter().all(|&id| id < 8), "{ids:?}");
    assert!(Mixture::new(vec![(SourceItems::Listed(Vec::new()), 1.0)]).is_err());
}

/// Shards written by the `webdataset` library itself (`tools/webdataset_fixture.py`): captions
/// from `.json`, else `.txt`; a sample without one left out; a corrupt JPEG left out when the
/// loader decodes it; the shard cut inside an image keeps the sample before the cut.
#[test]
fn shards_written_by_the_webdataset_library_read_as_it_reads_them() {
    let dir = crate::common::fixtures().join("webdataset");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let read =
        read_source(&webdataset(format!("{}/{{00000..00001}}.tar", dir.display()), 1.0)).unwrap();
    let (mut keys, mut captions) = (Vec::new(), Vec::new());
    for shard in ["00000.tar", "00001.tar"] {
        for (k, c) in expected[shard]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .zip(expected[shard]["captions"].as_array().unwrap())
        {
            keys.push(format!("{shard}/{}", k.as_str().unwrap()));
            captions.push(c.as_str().unwrap().to_string());
        }
    }
    assert_eq!(read.items.iter().map(|i| i.key.clone()).collect::<Vec<_>>(), keys);
    assert_eq!(read.items.iter().map(|i| i.caption.clone()).collect::<Vec<_>>(), captions);
    let left_out: Vec<&str> = read.skipped_keys.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(left_out, ["00000.tar/000000007", "00001.tar (the rest)"]);

    let loader = Loader::without_tokenizer(read.items, config());
    let skipped: Vec<String> = loader
        .epoch(LoaderState { seed: 0, epoch: 0, position: 0 })
        .flat_map(|b| b.unwrap().skipped.into_iter().map(|s| s.key))
        .collect();
    let undecodable = expected["00000.tar"]["undecodable"][0].as_str().unwrap();
    assert_eq!(skipped, [format!("00000.tar/{undecodable}")]);
}

/// img2dataset's own output (`tools/img2dataset_fixture.py`: six pictures from a local server and
/// one URL that answers 404), in its `files` layout (a parquet beside its image folder) and its
/// `webdataset` layout: the same keys and captions, the failed row left out by its status, and
/// every image reads.
#[test]
fn img2dataset_output_reads_in_both_layouts() {
    let dir = crate::common::fixtures().join("img2dataset");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let mut want: Vec<(String, String)> = expected["success"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["key"].as_str().unwrap().into(), r["caption"].as_str().unwrap().into()))
        .collect();
    want.sort();
    let table = SourceSpec {
        kind: SourceKind::Table,
        urls: None,
        annotations: None,
        path: Some(dir.join("files/00000.parquet")),
        images: None,
        weight: 1.0,
    };
    let shards = webdataset(dir.join("webdataset/00000.tar").display().to_string(), 1.0);
    for (spec, prefix) in [(table, ""), (shards, "00000.tar/")] {
        let read = read_source(&spec).unwrap();
        let mut got: Vec<(String, String)> = read
            .items
            .iter()
            .map(|i| (i.key.trim_start_matches(prefix).to_string(), i.caption.clone()))
            .collect();
        got.sort();
        assert_eq!(got, want, "{}", spec.name());
        if spec.kind == SourceKind::Table {
            assert_eq!(read.skipped_total() as u64, expected["failed"].as_u64().unwrap());
            assert!(
                read.skipped.keys().all(|r| r.starts_with("status failed")),
                "{:?}",
                read.skipped
            );
        }
        let loader = Loader::without_tokenizer(read.items, config());
        for b in loader.epoch(LoaderState { seed: 0, epoch: 0, position: 0 }) {
            assert!(b.unwrap().skipped.is_empty(), "{}", spec.name());
        }
    }
}

/// Users' own pairs as CSV (quoted commas in captions) and TSV give the same items as their JSONL;
/// an empty cell names its line.
#[test]
fn pairs_read_from_csv_tsv_and_jsonl_alike() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("p.csv"),
        "image,caption\na.png,\"a cat, asleep\"\nb.png,a dog\na.png,the same cat\n",
    )
    .unwrap();
    std::fs::write(
        d.join("p.tsv"),
        "image_path\tcaption\na.png\ta cat, asleep\nb.png\ta dog\na.png\tthe same cat\n",
    )
    .unwrap();
    std::fs::write(
        d.join("p.jsonl"),
        "{\"image_path\": \"a.png\", \"caption\": \"a cat, asleep\"}\n{\"image_path\": \"b.png\", \"caption\": \"a dog\"}\n{\"image_path\": \"a.png\", \"caption\": \"the same cat\"}\n",
    )
    .unwrap();
    let read = |f: &str| {
        let spec = SourceSpec {
            kind: SourceKind::Pairs,
            urls: None,
            annotations: None,
            path: Some(d.join(f)),
            images: None,
            weight: 1.0,
        };
        read_source(&spec).unwrap().items
    };
    let jsonl = read("p.jsonl");
    assert_eq!(jsonl.len(), 3);
    assert_eq!(jsonl[2].image_id, jsonl[0].image_id);
    assert_eq!(read("p.csv"), jsonl);
    assert_eq!(read("p.tsv"), jsonl);
    std::fs::write(d.join("bad.csv"), "image,caption\na.png,fine\n,no image\n").unwrap();
    let spec = SourceSpec {
        kind: SourceKind::Pairs,
        urls: None,
        annotations: None,
        path: Some(d.join("bad.csv")),
        images: None,
        weight: 1.0,
    };
    let e = read_source(&spec).unwrap_err().to_string();
    assert!(e.contains("bad.csv") && e.contains("line 3"), "{e}");
}
