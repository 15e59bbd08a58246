//! Readers on tiny files written in every supported format.

use crate::common;

use std::path::Path;

use datasets::formats::*;
use datasets::ImageSource;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn karpathy_train_groups_image_ids_and_eval_numbers_texts() {
    let d = tempfile::tempdir().unwrap();
    let train = write(
        d.path(),
        "train.json",
        r#"[{"caption":"A cat.","image":"train2014/a.jpg","image_id":"coco_9"},
            {"caption":"Another cat","image":"train2014/a.jpg","image_id":"coco_9"},
            {"caption":"A dog","image":"val2014/b.jpg","image_id":"coco_3"}]"#,
    );
    let items = read_karpathy_train(&train, Path::new("/imgs")).unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items.iter().map(|i| i.image_id).collect::<Vec<_>>(), vec![0, 0, 1]);
    assert_eq!(items[2].image, ImageSource::Path("/imgs/val2014/b.jpg".into()));
    assert_eq!(items[0].caption, "A cat.");

    let test = write(
        d.path(),
        "test.json",
        r#"[{"image":"val2014/COCO_val2014_000000391895.jpg","caption":["a","b","c"]},
            {"image":"val2014/COCO_val2014_000000000042.jpg","caption":["d","e"]}]"#,
    );
    let split = read_karpathy_eval(&test).unwrap();
    assert_eq!(split.texts, vec!["a", "b", "c", "d", "e"]);
    assert_eq!(split.img2txt, vec![vec![0, 1, 2], vec![3, 4]]);
    assert_eq!(split.txt2img, vec![0, 0, 0, 1, 1]);
    assert_eq!(split.images[0].coco_id, Some(391895));
    assert_eq!(split.images[1].coco_id, Some(42));
}

#[test]
fn karpathy_errors_name_file_and_field() {
    let d = tempfile::tempdir().unwrap();
    let bad = write(d.path(), "bad.json", r#"[{"image":"a.jpg"}]"#);
    let e = read_karpathy_eval(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.json") && e.contains("caption"), "{e}");
    let bad_id =
        write(d.path(), "bad_id.json", r#"[{"image":"a.jpg","caption":"x","image_id":[1]}]"#);
    let e = read_karpathy_train(&bad_id, d.path()).unwrap_err().to_string();
    assert!(e.contains("bad_id.json") && e.contains("[0].image_id"), "{e}");
}

#[test]
fn vqa_official_fixture_joins_annotations() {
    let dir = common::fixtures().join("vqa-official");
    let qs = read_vqa_official(&dir.join("questions.json"), Some(&dir.join("annotations.json")))
        .unwrap();
    assert_eq!(qs.len(), 40);
    let q0 = &qs[0];
    assert_eq!((q0.question_id, q0.image_id), (1001, 500));
    assert_eq!(q0.question, "synthetic question 0?");
    let ann = q0.annotation.as_ref().unwrap();
    assert_eq!(ann.answers.len(), 10);
    assert_eq!(ann.answer_type, "yes/no");
    assert_eq!(ann.question_type, "what is");
    assert_eq!(
        ann.answers.iter().map(|a| a.answer_id).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    let no_ann = read_vqa_official(&dir.join("questions.json"), None).unwrap();
    assert!(no_ann.iter().all(|q| q.annotation.is_none()));
}

#[test]
fn vqa_missing_annotation_is_an_error_naming_the_question() {
    let d = tempfile::tempdir().unwrap();
    let q = write(
        d.path(),
        "q.json",
        r#"{"questions":[{"image_id":1,"question":"what?","question_id":7}]}"#,
    );
    let a = write(d.path(), "a.json", r#"{"annotations":[]}"#);
    let e = read_vqa_official(&q, Some(&a)).unwrap_err().to_string();
    assert!(e.contains("a.json") && e.contains("question_id 7"), "{e}");
}

#[test]
fn lavis_vqa_rows_and_answer_weights() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "vqa_train.json",
        r#"[{"question_id":262148000,"question":"Where is he?","answer":["net","net","netting","net"],"image":"val2014/x.jpg","dataset":"vqa"},
            {"question_id":"5","question":"What color?","answer":"red","image":"vg/1.jpg","dataset":"vg"},
            {"question_id":6,"question":"Test?","image":"t.jpg"}]"#,
    );
    let rows = read_lavis_vqa(&p).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0].weighted_answers(),
        vec![("net".to_string(), 0.75), ("netting".to_string(), 0.25)]
    );
    assert_eq!(rows[1].answers, vec!["red"]);
    assert_eq!(rows[1].question_id, 5);
    assert!(rows[2].answers.is_empty());
}

#[test]
fn gqa_official_dict_and_lavis_list() {
    let d = tempfile::tempdir().unwrap();
    let off = write(
        d.path(),
        "testdev_balanced_questions.json",
        r#"{"201307251":{"question":"Is it red?","imageId":"n250821","answer":"no","fullAnswer":"No, it is blue.","isBalanced":true,"types":{"structural":"verify"}},
            "201640614":{"question":"What is it?","imageId":"n288870","answer":"cat"}}"#,
    );
    let q = read_gqa(&off).unwrap();
    assert_eq!(q.len(), 2);
    assert_eq!(q[0].question_id, "201307251");
    assert_eq!(q[0].image, "n250821.jpg");
    assert_eq!(q[0].answer.as_deref(), Some("no"));
    let list = write(
        d.path(),
        "lavis.json",
        r#"[{"image":"n1.jpg","question":"Q?","question_id":12,"answer":"yes"},{"image":"n2.jpg","question":"R?","question_id":"13"}]"#,
    );
    let q = read_gqa(&list).unwrap();
    assert_eq!(q[0].question_id, "12");
    assert_eq!(q[1].answer, None);
}

#[test]
fn nocaps_capfilt_and_jsonl_pairs() {
    let d = tempfile::tempdir().unwrap();
    let n = write(
        d.path(),
        "nocaps_val.json",
        r#"[{"image":"val/0013ea2087020901.jpg","img_id":0},{"image":"val/b.jpg","img_id":1}]"#,
    );
    let imgs = read_nocaps(&n).unwrap();
    assert_eq!(imgs[1].img_id, 1);
    let c = write(
        d.path(),
        "ccs.json",
        r#"[{"url":"http://x/1.jpg","caption":"a dog"},{"image":"local/2.jpg","caption":"a cat"}]"#,
    );
    let items = read_capfilt(&c, Path::new("/root")).unwrap();
    assert_eq!(items[0].image, ImageSource::Url("http://x/1.jpg".into()));
    assert_eq!(items[1].image, ImageSource::Path("/root/local/2.jpg".into()));
    let j = write(
        d.path(),
        "pairs.jsonl",
        "{\"image_path\":\"a.png\",\"caption\":\"one\"}\n\n{\"image_path\":\"a.png\",\"caption\":\"two\"}\n{\"image_path\":\"b.png\",\"caption\":\"three\"}\n",
    );
    let items = read_pairs_jsonl(&j, d.path()).unwrap();
    assert_eq!(items.iter().map(|i| i.image_id).collect::<Vec<_>>(), vec![0, 0, 1]);
    let bad = write(d.path(), "bad.jsonl", "{\"image_path\":\"a.png\"}\n");
    let e = read_pairs_jsonl(&bad, d.path()).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl") && e.contains("line 1"), "{e}");
}

fn png_bytes() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(8, 6, image::Rgb([10, 200, 30]));
    let mut c = std::io::Cursor::new(Vec::new());
    img.write_to(&mut c, image::ImageFormat::Png).unwrap();
    c.into_inner()
}

#[test]
fn webdataset_shard_groups_members_and_prefers_json_caption() {
    let d = tempfile::tempdir().unwrap();
    let shard = d.path().join("00000.tar");
    let samples = vec![
        (
            "000000000".to_string(),
            vec![
                ("jpg".to_string(), png_bytes()),
                ("txt".to_string(), b"txt caption".to_vec()),
                (
                    "json".to_string(),
                    br#"{"caption": "json caption", "key": "000000000"}"#.to_vec(),
                ),
            ],
        ),
        (
            "000000001".to_string(),
            vec![
                ("jpg".to_string(), b"\xff\xd8\xff\xe0 not really a jpeg".to_vec()),
                ("txt".to_string(), b"corrupt one".to_vec()),
            ],
        ),
        ("000000002".to_string(), vec![("txt".to_string(), b"no image".to_vec())]),
    ];
    write_shard(&shard, &samples).unwrap();
    let mut got = Vec::new();
    for_each_shard_sample(&shard, |s| got.push(s)).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].caption.as_deref(), Some("json caption"));
    assert_eq!(got[0].image.as_ref().unwrap().0, "jpg");
    assert_eq!(got[1].caption.as_deref(), Some("corrupt one"));
    assert!(got[2].image.is_none());

    // A shard cut in the middle delivers what it could and then reports the file.
    let bytes = std::fs::read(&shard).unwrap();
    let cut = d.path().join("00001.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2 + 100]).unwrap();
    let mut partial = Vec::new();
    let res = for_each_shard_sample(&cut, |s| partial.push(s.key));
    assert!(partial.len() < 3);
    let e = res.unwrap_err().to_string();
    assert!(e.contains("00001.tar"), "{e}");
}

#[cfg(feature = "tables")]
#[test]
fn img2dataset_parquet_and_tsv_skip_failed_rows() {
    use polars::prelude::*;
    let d = tempfile::tempdir().unwrap();
    let mut df = df!(
        "url" => &["http://a", "http://b", "http://c", "http://d"],
        "caption" => &["first", "second", "third", "fourth"],
        "key" => &["000000000", "000000001", "000000002", "000000003"],
        "status" => &["success", "failed_to_download", "success", "failed_to_resize"],
    )
    .unwrap();
    let p = d.path().join("00000.parquet");
    ParquetWriter::new(std::fs::File::create(&p).unwrap()).finish(&mut df).unwrap();
    let t = read_table(&p, "caption").unwrap();
    assert_eq!(t.rows.len(), 2);
    assert_eq!(t.rows[1].caption, "third");
    assert_eq!(t.rows[1].key.as_deref(), Some("000000002"));
    assert_eq!(t.skipped_total(), 2);
    assert_eq!(t.skipped["failed_to_download"], 1);

    let tsv = write(d.path(), "cc3m.tsv", "caption\turl\na b\thttp://x\nc d\thttp://y\n");
    let t = read_table(&tsv, "caption").unwrap();
    assert_eq!(t.rows.len(), 2);
    assert_eq!(t.rows[0].url.as_deref(), Some("http://x"));
    let e = read_table(&tsv, "TEXT").unwrap_err().to_string();
    assert!(e.contains("cc3m.tsv") && e.contains("TEXT"), "{e}");
}
