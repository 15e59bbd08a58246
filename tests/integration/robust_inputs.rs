//! A corpus of malformed inputs, generated into a temp dir, run through every command that reads
//! them. Each must end with a non-zero exit and one `error:` line naming the file and the
//! problem (or, where the input is valid but odd, succeed), and `panicked at` must never appear.

#[path = "robust/png.rs"]
mod png;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;
use candle_core::{DType, Device, Tensor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

enum Expect {
    /// Non-zero exit; the `error:` line contains every substring.
    Error(Vec<String>),
    /// Exit 0 (odd but valid input).
    Success,
}

struct Case {
    name: String,
    args: Vec<OsString>,
    expect: Expect,
}

/// Builds the corpus and the case table.
struct Corpus {
    dir: tempfile::TempDir,
    cases: Vec<Case>,
}

fn err(subs: &[&str]) -> Expect {
    Expect::Error(subs.iter().map(|s| s.to_string()).collect())
}

fn args(list: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    list.iter().map(|a| a.as_ref().to_os_string()).collect()
}

impl Corpus {
    fn new() -> Self {
        Corpus { dir: tempfile::tempdir().unwrap(), cases: Vec::new() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn case(&mut self, name: &str, args: Vec<OsString>, expect: Expect) {
        self.cases.push(Case { name: name.to_string(), args, expect });
    }

    /// A copy of an hf-tiny model directory with `edit` applied.
    fn model(&self, name: &str, from: &str, edit: impl FnOnce(&Path)) -> PathBuf {
        let dir = self.path(name);
        copy_dir(&fixture(from), &dir);
        edit(&dir);
        dir
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn truncate_file(path: &Path, keep: f64) {
    let b = std::fs::read(path).unwrap();
    std::fs::write(path, &b[..(b.len() as f64 * keep) as usize]).unwrap();
}

fn edit_tensors(path: &Path, f: impl FnOnce(&mut std::collections::HashMap<String, Tensor>)) {
    let mut t = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    f(&mut t);
    candle_core::safetensors::save(&t, path).unwrap();
}

/// The name of a 2-D non-square weight of the Q-Former in `model.safetensors`.
fn non_square_qformer_weight(path: &Path) -> String {
    let t = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let mut names: Vec<&String> = t
        .iter()
        .filter(|(n, v)| {
            n.starts_with("qformer.") && v.dims().len() == 2 && v.dims()[0] != v.dims()[1]
        })
        .map(|(n, _)| n)
        .collect();
    names.sort();
    names[0].clone()
}

fn score_args(model: &Path, image: &Path, text: &str) -> Vec<OsString> {
    args(&[&"score", &"--model", &model, &"--json", &"--image", &image, &"--text", &text])
}

fn image_cases(c: &mut Corpus) {
    let itm = fixture("itm");
    let photo = std::fs::read(root().join("tests/fixtures/preprocess/photo640x480.jpg")).unwrap();
    let good_png = png::rgb8();
    let mut bad_crc = good_png.clone();
    let n = bad_crc.len();
    bad_crc[n - 20] ^= 0xff; // inside the IDAT CRC or data
    let images: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("zero-byte.png", vec![], vec!["zero-byte.png", "cannot decode image"]),
        (
            "truncated.png",
            good_png[..good_png.len() / 2].to_vec(),
            vec!["truncated.png", "cannot decode image"],
        ),
        (
            "header-only.png",
            png::SIGNATURE.to_vec(),
            vec!["header-only.png", "cannot decode image"],
        ),
        (
            "garbage.jpg",
            (0..300u32).map(|i| (i * 31 % 251) as u8).collect(),
            vec!["garbage.jpg", "cannot decode image"],
        ),
        (
            "text.png",
            b"hello, I am not an image\n".to_vec(),
            vec!["text.png", "cannot decode image"],
        ),
        (
            "truncated.jpg",
            photo[..photo.len() / 3].to_vec(),
            vec!["truncated.jpg", "cannot decode image"],
        ),
        (
            "soi-only.jpg",
            vec![0xff, 0xd8, 0xff, 0xe0, 0, 16],
            vec!["soi-only.jpg", "cannot decode image"],
        ),
        (
            "bomb-side.png",
            png::bomb(100_000, 100_000),
            vec!["bomb-side.png", "cannot decode image"],
        ),
        ("bomb-pixels.png", png::bomb(30_000, 30_000), vec!["bomb-pixels.png", "pixel limit"]),
        ("zero-dims.png", png::bomb(0, 16), vec!["zero-dims.png", "cannot decode image"]),
        (
            "bad-depth.png",
            png::png(4, 4, 3, 2, &vec![vec![0; 12]; 4], None),
            vec!["bad-depth.png", "cannot decode image"],
        ),
        ("bad-crc.png", bad_crc, vec!["bad-crc.png", "cannot decode image"]),
        (
            "short-idat.png",
            png::png(16, 16, 8, 2, &vec![vec![7; 48]; 3], None),
            vec!["short-idat.png", "cannot decode image"],
        ),
        (
            "no-plte.png",
            png::png(4, 4, 8, 3, &vec![vec![0; 4]; 4], None),
            vec!["no-plte.png", "cannot decode image"],
        ),
        (
            "gif.gif",
            b"GIF89a\x10\x00\x10\x00\x00\x00\x00;".to_vec(),
            vec!["gif.gif", "cannot decode image"],
        ),
        (
            "bitmap.bmp",
            b"BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00".to_vec(),
            vec!["bitmap.bmp", "cannot decode image"],
        ),
        (
            "riff.webp",
            b"RIFF\x20\x00\x00\x00WEBPVP8 \x10\x00\x00\x00garbagegarbage!!".to_vec(),
            vec!["riff.webp", "cannot decode image"],
        ),
        (
            "jpeg-bomb.jpg",
            jpeg_header(65_000, 65_000),
            vec!["jpeg-bomb.jpg", "cannot decode image"],
        ),
    ];
    for (name, bytes, expect) in images {
        let p = c.write(&format!("img/{name}"), bytes);
        let a = score_args(&itm, &p, "a cat");
        c.case(&format!("score image {name}"), a, err(&expect));
    }
    // Not regular readable files.
    let d = c.path("img/a-directory.png");
    std::fs::create_dir_all(&d).unwrap();
    c.case("score image is a directory", score_args(&itm, &d, "x"), err(&["a-directory.png"]));
    let link = c.path("img/dangling.png");
    std::os::unix::fs::symlink(c.path("img/nowhere.png"), &link).unwrap();
    c.case(
        "score image dangling symlink",
        score_args(&itm, &link, "x"),
        err(&["dangling.png", "No such file"]),
    );
    c.case(
        "score image missing",
        score_args(&itm, &c.path("img/missing.png"), "x"),
        err(&["missing.png", "No such file"]),
    );

    // The same bad image through the other commands that read images.
    let bad = c.write("img/other-cmds.png", &png::rgb8()[..40]);
    c.case(
        "embed bad image",
        args(&[&"embed", &"--model", &itm, &"--image", &bad, &"--out", &c.path("e.safetensors")]),
        err(&["other-cmds.png", "cannot decode image"]),
    );
    let mut a = args(&[
        &"eval",
        &"loss",
        &"--model",
        &itm,
        &"--lavis-checkpoint",
        &fixture("itm/lavis_stage1.pth"),
        &"--json",
        &"--image",
        &bad,
        &fixture("images/img1.png"),
    ]);
    a.extend(args(&[&"--text", &"a", &"b"]));
    c.case("eval loss bad image", a, err(&["other-cmds.png", "cannot decode image"]));
    c.case(
        "generate bad image",
        args(&[
            &"generate",
            &"--model",
            &fixture("opt"),
            &"--image",
            &bad,
            &"--max-new-tokens",
            &"2",
        ]),
        err(&["other-cmds.png", "cannot decode image"]),
    );
    c.case(
        "caption bad image",
        args(&[
            &"caption",
            &"--model",
            &fixture("opt"),
            &"--image",
            &bad,
            &"--max-new-tokens",
            &"2",
            &"--num-beams",
            &"1",
            &"--min-new-tokens",
            &"0",
        ]),
        err(&["other-cmds.png", "cannot decode image"]),
    );
}

/// A JPEG that is only SOI + a baseline SOF0 header claiming `w x h`, 3 components.
fn jpeg_header(w: u16, h: u16) -> Vec<u8> {
    let mut v = vec![0xff, 0xd8, 0xff, 0xc0, 0, 17, 8];
    v.extend_from_slice(&h.to_be_bytes());
    v.extend_from_slice(&w.to_be_bytes());
    v.extend_from_slice(&[3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0]);
    v.extend_from_slice(&[0xff, 0xd9]);
    v
}

fn text_cases(c: &mut Corpus) {
    let itm = fixture("itm");
    let img = fixture("images/img0.png");
    let long = "a cat ".repeat(1700); // 10,200 characters
    let odd = [
        ("empty caption", String::new()),
        ("whitespace caption", " \t\n ".to_string()),
        ("10k-character caption", long),
        (
            "odd unicode caption",
            "\u{202e}ǝɯoɔlǝʍ 👩‍👩‍👧‍👦 e\u{301}\u{301}\u{301} \u{200b}\u{feff} 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u{fffd}"
                .to_string(),
        ),
        ("CJK caption", "一只猫坐在垫子上".to_string()),
    ];
    for (name, text) in odd {
        c.case(&format!("score {name}"), score_args(&itm, &img, &text), Expect::Success);
    }
}

fn model_cases(c: &mut Corpus) {
    let img = fixture("images/img0.png");
    let sc = |m: &Path| score_args(m, &img, "a cat");

    let m = c.model("m-config-truncated", "itm", |d| truncate_file(&d.join("config.json"), 0.5));
    c.case("config.json truncated", sc(&m), err(&["config.json"]));
    let m = c.model("m-config-heads", "itm", |d| {
        edit_json(&d.join("config.json"), |v| v["qformer_config"]["num_attention_heads"] = 7.into())
    });
    c.case(
        "config heads do not divide hidden",
        sc(&m),
        err(&["config.json", "num_attention_heads (7) does not divide hidden_size (48)"]),
    );
    let m = c.model("m-config-type", "itm", |d| {
        edit_json(&d.join("config.json"), |v| v["qformer_config"]["hidden_size"] = "big".into())
    });
    c.case(
        "config mistyped field",
        sc(&m),
        err(&["config.json", "invalid type: string \"big\", expected usize at line 18"]),
    );
    let m = c.model("m-config-zero", "itm", |d| {
        edit_json(&d.join("config.json"), |v| v["vision_config"]["patch_size"] = 0.into())
    });
    c.case("config zero patch size", sc(&m), err(&["config.json", "patch_size must be > 0"]));
    let m = c.model("m-config-negative", "itm", |d| {
        edit_json(&d.join("config.json"), |v| v["num_query_tokens"] = (-4).into())
    });
    c.case(
        "config negative query tokens",
        sc(&m),
        err(&["config.json", "invalid value: integer `-4`, expected usize"]),
    );
    let m = c.model("m-config-array", "itm", |d| {
        std::fs::write(d.join("config.json"), "[1, 2]").unwrap()
    });
    c.case("config is an array", sc(&m), err(&["config.json"]));
    let m = c.model("m-config-vocab", "itm", |d| {
        edit_json(&d.join("config.json"), |v| v["qformer_config"]["vocab_size"] = 10.into())
    });
    c.case("config vocab disagrees with weights", sc(&m), err(&["word_embeddings", "shape"]));

    let m =
        c.model("m-weights-truncated", "itm", |d| truncate_file(&d.join("model.safetensors"), 0.6));
    c.case("weights truncated", sc(&m), err(&["model.safetensors"]));
    let m = c.model("m-weights-empty", "itm", |d| {
        std::fs::write(d.join("model.safetensors"), b"").unwrap()
    });
    c.case("weights zero-byte", sc(&m), err(&["model.safetensors"]));
    let m = c.model("m-weights-header", "itm", |d| {
        std::fs::write(d.join("model.safetensors"), [0xff; 64]).unwrap()
    });
    c.case("weights absurd header length", sc(&m), err(&["model.safetensors"]));
    let m = c.model("m-weights-json", "itm", |d| {
        let mut b = 20u64.to_le_bytes().to_vec();
        b.extend_from_slice(b"{\"a\": {\"dtype\": 7}} ");
        std::fs::write(d.join("model.safetensors"), b).unwrap()
    });
    c.case("weights malformed header", sc(&m), err(&["model.safetensors"]));
    let m = c.model("m-weights-wrong-model", "itm", |d| {
        std::fs::copy(fixture("opt/model.safetensors"), d.join("model.safetensors")).unwrap();
    });
    c.case("weights of another model (OPT)", sc(&m), err(&["missing"]));
    let mut shaped = String::new();
    let m = c.model("m-weights-shape", "itm", |d| {
        let p = d.join("model.safetensors");
        shaped = non_square_qformer_weight(&p);
        let name = shaped.clone();
        edit_tensors(&p, |t| {
            let w = t[&name].t().unwrap().contiguous().unwrap();
            t.insert(name, w);
        })
    });
    c.case("weights wrongly shaped tensor", sc(&m), err(&[&shaped, "shape"]));
    let mut typed = String::new();
    let m = c.model("m-weights-dtype", "itm", |d| {
        let p = d.join("model.safetensors");
        typed = non_square_qformer_weight(&p);
        let name = typed.clone();
        edit_tensors(&p, |t| {
            let w = t[&name].to_dtype(DType::U8).unwrap();
            t.insert(name, w);
        })
    });
    c.case("weights wrongly typed tensor", sc(&m), err(&[&typed, "dtype"]));
    let mut missing = String::new();
    let m = c.model("m-weights-missing", "itm", |d| {
        let p = d.join("model.safetensors");
        missing = non_square_qformer_weight(&p);
        let name = missing.clone();
        edit_tensors(&p, |t| {
            t.remove(&name);
        })
    });
    c.case("weights missing tensor", sc(&m), err(&[&missing, "missing"]));

    let m = c.model("m-tokenizer", "itm", |d| truncate_file(&d.join("tokenizer.json"), 0.3));
    c.case("tokenizer truncated", sc(&m), err(&["tokenizer.json"]));
    let m = c.model("m-preproc-type", "itm", |d| {
        edit_json(&d.join("preprocessor_config.json"), |v| v["size"] = "big".into())
    });
    c.case(
        "preprocessor mistyped size",
        sc(&m),
        err(&["preprocessor_config.json", "expected struct ImageSize"]),
    );
    let m = c.model("m-preproc-mean", "itm", |d| {
        edit_json(&d.join("preprocessor_config.json"), |v| {
            v["image_mean"] = serde_json::json!([0.5, 0.5])
        })
    });
    c.case(
        "preprocessor two-channel mean",
        sc(&m),
        err(&["preprocessor_config.json", "image_mean"]),
    );
    let m = c.model("m-preproc-zero", "itm", |d| {
        edit_json(&d.join("preprocessor_config.json"), |v| {
            v["size"] = serde_json::json!({"height": 0, "width": 32})
        })
    });
    c.case("preprocessor zero size", sc(&m), err(&["preprocessor_config.json", "size"]));
    let m = c.model("m-preproc-std", "itm", |d| {
        edit_json(&d.join("preprocessor_config.json"), |v| {
            v["image_std"] = serde_json::json!([0.0, 0.2, 0.2])
        })
    });
    c.case("preprocessor zero std", sc(&m), err(&["preprocessor_config.json", "image_std"]));

    // LAVIS checkpoints.
    let itm = fixture("itm");
    let pth = |c: &Corpus, name: &str, bytes: Vec<u8>| c.write(&format!("ckpt/{name}"), bytes);
    let full = std::fs::read(fixture("itm/lavis_stage1.pth")).unwrap();
    for (name, bytes) in [
        ("truncated.pth", full[..full.len() / 2].to_vec()),
        ("empty.pth", vec![]),
        ("garbage.pth", b"PK\x03\x04 definitely not a torch zip".to_vec()),
        ("tail-cut.pth", full[..full.len() - 10].to_vec()),
    ] {
        let p = pth(c, name, bytes);
        let mut a = sc(&itm);
        a.extend(args(&[&"--lavis-checkpoint", &p]));
        c.case(&format!("lavis checkpoint {name}"), a, err(&[name]));
    }
    // LM heads for `eval loss`.
    let head = c.write(
        "ckpt/head-shape.safetensors",
        std::fs::read(fixture("itm/lm_head.safetensors")).unwrap(),
    );
    let mut head_name = String::new();
    edit_tensors(&head, |t| {
        let mut names: Vec<String> =
            t.keys().filter(|n| t[*n].dims().len() == 2).cloned().collect();
        names.sort();
        head_name = names[0].clone();
        let w = t[&head_name].narrow(0, 0, 3).unwrap();
        t.insert(head_name.clone(), w);
    });
    let loss = |head: &Path| {
        let mut a = args(&[
            &"eval",
            &"loss",
            &"--model",
            &itm,
            &"--lavis-checkpoint",
            &fixture("itm/lavis_stage1.pth"),
            &"--lm-head",
            &head,
            &"--json",
        ]);
        a.extend(image_args(&images()[..2]));
        a.extend(text_args(&TEXTS[..2]));
        a
    };
    c.case("lm head wrongly shaped", loss(&head), err(&["cls.predictions", "shape"]));
    c.case(
        "lm head of the wrong file",
        loss(&fixture("itm/model.safetensors")),
        err(&["model.safetensors", "cls.predictions"]),
    );
    let garbage =
        c.write("ckpt/head-garbage.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}{}{}{}");
    c.case("lm head garbage", loss(&garbage), err(&["head-garbage.safetensors"]));
}

fn llm_cases(c: &mut Corpus) {
    let img = fixture("images/img0.png");
    let gen = |m: &Path, extra: &[&str]| {
        let mut a =
            args(&[&"generate", &"--model", &m, &"--image", &img, &"--max-new-tokens", &"3"]);
        a.extend(extra.iter().map(OsString::from));
        a
    };
    let m =
        c.model("l-genconfig", "opt", |d| truncate_file(&d.join("generation_config.json"), 0.5));
    c.case("generation_config truncated", gen(&m, &[]), err(&["generation_config.json"]));
    let m = c.model("l-eos", "opt", |d| {
        edit_json(&d.join("generation_config.json"), |v| v["eos_token_id"] = "end".into())
    });
    c.case(
        "generation_config mistyped eos",
        gen(&m, &[]),
        err(&["generation_config.json", "eos_token_id"]),
    );
    let m = c.model("l-text-heads", "opt", |d| {
        edit_json(&d.join("config.json"), |v| v["text_config"]["num_attention_heads"] = 3.into())
    });
    c.case("LLM heads do not divide hidden", gen(&m, &[]), err(&["num_attention_heads"]));
    let m = c.model("l-llm-weights", "opt", |d| truncate_file(&d.join("model.safetensors"), 0.9));
    c.case("LLM weights truncated", gen(&m, &[]), err(&["model.safetensors"]));
    let opt = fixture("opt");
    c.case("generate zero beams", gen(&opt, &["--num-beams", "0"]), err(&["num_beams"]));
    c.case(
        "generate repetition penalty 0",
        gen(&opt, &["--repetition-penalty", "0"]),
        err(&["--repetition-penalty", "positive"]),
    );
}

fn vqa_cases(c: &mut Corpus) {
    let fx = root().join("tests/fixtures/vqa-official");
    let (q, a, r) =
        (fx.join("questions.json"), fx.join("annotations.json"), fx.join("results.json"));
    let score = |r: &Path, q: &Path, a: &Path| {
        args(&[
            &"eval",
            &"vqa-score",
            &"--json",
            &"--results",
            &r,
            &"--questions",
            &q,
            &"--annotations",
            &a,
        ])
    };
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&r).unwrap()).unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = results.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let res_cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("r-truncated.json", std::fs::read(&r).unwrap()[..100].to_vec(), vec!["r-truncated.json"]),
        ("r-empty.json", vec![], vec!["r-empty.json"]),
        ("r-object.json", b"{\"question_id\": 1}".to_vec(), vec!["r-object.json", "array"]),
        (
            "r-no-answer.json",
            with(&|v| {
                v[0].as_object_mut().unwrap().remove("answer");
            }),
            vec!["r-no-answer.json", "answer"],
        ),
        (
            "r-qid-string.json",
            with(&|v| v[1]["question_id"] = "abc".into()),
            vec!["r-qid-string.json", "question_id"],
        ),
        (
            "r-qid-float.json",
            with(&|v| v[1]["question_id"] = 1.5.into()),
            vec!["r-qid-float.json", "question_id"],
        ),
        (
            "r-answer-number.json",
            with(&|v| v[0]["answer"] = 42.into()),
            vec!["r-answer-number.json", "answer"],
        ),
        (
            "r-unknown-qid.json",
            with(&|v| v[0]["question_id"] = 987654321.into()),
            vec!["r-unknown-qid.json", "987654321"],
        ),
        (
            "r-missing-one.json",
            with(&|v| {
                v.as_array_mut().unwrap().pop();
            }),
            vec!["r-missing-one.json"],
        ),
        (
            "r-latin1.json",
            b"[{\"question_id\": 1, \"answer\": \"caf\xe9\"}]".to_vec(),
            vec!["r-latin1.json"],
        ),
    ];
    for (name, bytes, expect) in res_cases {
        let p = c.write(&format!("vqa/{name}"), bytes);
        c.case(&format!("vqa-score results {name}"), score(&p, &q, &a), err(&expect));
    }
    // Valid but odd answers.
    let p = c.write(
        "vqa/r-odd-answers.json",
        with(&|v| {
            v[0]["answer"] = "x".repeat(10_000).into();
            v[1]["answer"] = "".into();
            v[2]["answer"] = "\u{202e}ça\u{301} 👍🏽\u{0}".into();
        }),
    );
    c.case("vqa-score odd answers", score(&p, &q, &a), Expect::Success);

    let questions: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&q).unwrap()).unwrap();
    let annotations: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&a).unwrap()).unwrap();
    let qmod = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = questions.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let amod = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = annotations.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    for (name, bytes, expect) in [
        (
            "q-no-questions.json",
            qmod(&|v| {
                v.as_object_mut().unwrap().remove("questions");
            }),
            vec!["q-no-questions.json", "questions"],
        ),
        (
            "q-qid-float.json",
            qmod(&|v| v["questions"][0]["question_id"] = 2.5.into()),
            vec!["q-qid-float.json", "question_id"],
        ),
        ("q-list.json", b"[]".to_vec(), vec!["q-list.json"]),
    ] {
        let p = c.write(&format!("vqa/{name}"), bytes);
        c.case(&format!("vqa-score questions {name}"), score(&r, &p, &a), err(&expect));
    }
    for (name, bytes, expect) in [
        (
            "a-no-answers.json",
            amod(&|v| {
                v["annotations"][0].as_object_mut().unwrap().remove("answers");
            }),
            vec!["a-no-answers.json", "answers"],
        ),
        (
            "a-empty-answers.json",
            amod(&|v| v["annotations"][0]["answers"] = serde_json::json!([])),
            vec!["a-empty-answers.json", "answers"],
        ),
        (
            "a-duplicate.json",
            amod(&|v| {
                let first = v["annotations"][0].clone();
                v["annotations"].as_array_mut().unwrap().push(first);
            }),
            vec!["a-duplicate.json", "repeats"],
        ),
        (
            "a-answer-type.json",
            amod(&|v| v["annotations"][0]["answers"][0]["answer"] = serde_json::json!(["x"])),
            vec!["a-answer-type.json", "answer"],
        ),
    ] {
        let p = c.write(&format!("vqa/{name}"), bytes);
        c.case(&format!("vqa-score annotations {name}"), score(&r, &q, &p), err(&expect));
    }
    let d = c.path("vqa/a-dir.json");
    std::fs::create_dir_all(&d).unwrap();
    c.case("vqa-score annotations is a directory", score(&r, &q, &d), err(&["a-dir.json"]));

    // `eval vqa` (generation) with broken inputs.
    let tiny = root().join("tests/fixtures/vqa-tiny");
    let vqa = |q: &Path, images: &Path, pattern: &str, extra: &[&str]| {
        let mut a = args(&[
            &"eval",
            &"vqa",
            &"--model",
            &fixture("opt"),
            &"--questions",
            &q,
            &"--annotations",
            &tiny.join("annotations.json"),
            &"--images",
            &images,
            &"--image-pattern",
            &pattern,
            &"--max-new-tokens",
            &"2",
            &"--num-beams",
            &"1",
        ]);
        a.extend(extra.iter().map(OsString::from));
        a
    };
    let tq = tiny.join("questions.json");
    let imgs = fixture("images");
    c.case(
        "eval vqa unknown pattern placeholder",
        vqa(&tq, &imgs, "img{nope}.png", &[]),
        err(&["{nope}"]),
    );
    c.case(
        "eval vqa missing images",
        vqa(&tq, &c.path("no-images"), "img{image_id}.png", &[]),
        err(&["no-images"]),
    );
    c.case(
        "eval vqa zero batch",
        vqa(&tq, &imgs, "img{image_id}.png", &["--batch-size", "0"]),
        err(&["batch"]),
    );
    let bad_imgs = c.path("vqa-images");
    copy_dir(&imgs, &bad_imgs);
    std::fs::write(bad_imgs.join("img1.png"), b"broken").unwrap();
    c.case(
        "eval vqa broken image",
        vqa(&tq, &bad_imgs, "img{image_id}.png", &[]),
        err(&["img1.png", "cannot decode image"]),
    );
    let bad_q = c.write(
        "vqa/tiny-q.json",
        b"{\"questions\": [{\"question_id\": 1, \"image_id\": \"zero\", \"question\": \"?\"}]}",
    );
    c.case(
        "eval vqa mistyped image_id",
        vqa(&bad_q, &imgs, "img{image_id}.png", &[]),
        err(&["tiny-q.json", "expected u64"]),
    );
}

fn retrieval_cases(c: &mut Corpus) {
    let itm = fixture("itm");
    let imgs = fixture("images");
    // The report goes to the scratch dir: by default it would land beside the fixture model.
    let report = c.path("ret-report.json");
    let ret = |ann: &Path, images: &Path, extra: &[&str]| {
        let mut a = args(&[
            &"eval",
            &"retrieval",
            &"--model",
            &itm,
            &"--annotations",
            &ann,
            &"--images",
            &images,
            &"--json",
            &"--out",
            &report,
        ]);
        if !extra.contains(&"--k-test") {
            a.extend(args(&[&"--k-test", &"2"]));
        }
        a.extend(extra.iter().map(OsString::from));
        a
    };
    let good = fixture("retrieval/karpathy_test.json");
    for (name, text, expect) in [
        ("k-truncated.json", "[{\"image\": \"img0.png\", \"caption\": [\"a", vec!["k-truncated.json"]),
        ("k-no-image.json", "[{\"caption\": [\"a\"]}, {\"image\": \"img1.png\", \"caption\": \"b\"}]", vec!["k-no-image.json", "image"]),
        ("k-no-captions.json", "[{\"image\": \"img0.png\", \"caption\": []}, {\"image\": \"img1.png\", \"caption\": \"b\"}]", vec!["k-no-captions.json", "caption"]),
        ("k-caption-number.json", "[{\"image\": \"img0.png\", \"caption\": 5}, {\"image\": \"img1.png\", \"caption\": \"b\"}]", vec!["k-caption-number.json"]),
        ("k-object.json", "{\"images\": []}", vec!["k-object.json"]),
        ("k-empty-list.json", "[]", vec!["k-empty-list.json"]),
        ("k-missing-image.json", "[{\"image\": \"gone.png\", \"caption\": \"a\"}, {\"image\": \"img1.png\", \"caption\": \"b\"}]", vec!["gone.png"]),
    ] {
        let p = c.write(&format!("ret/{name}"), text);
        c.case(&format!("retrieval {name}"), ret(&p, &imgs, &[]), err(&expect));
    }
    c.case("retrieval k-test 0", ret(&good, &imgs, &["--k-test", "0"]), err(&["k-test"]));
    c.case(
        "retrieval batch-size 0",
        ret(&good, &imgs, &["--batch-size", "0"]),
        err(&["batch-size"]),
    );
    // Empty and 10k-character captions inside a dataset are valid text.
    let p = c.write(
        "ret/k-odd-captions.json",
        serde_json::to_vec(&serde_json::json!([
            {"image": "img0.png", "caption": ["", "x".repeat(10_000)]},
            {"image": "img1.png", "caption": "\u{202e}👍🏽 e\u{301}"}
        ]))
        .unwrap(),
    );
    c.case("retrieval odd captions", ret(&p, &imgs, &[]), Expect::Success);
}

fn cache_features_cases(c: &mut Corpus) {
    let itm = fixture("itm");
    let imgs = fixture("images");
    let cf_root = c.path("cf-out");
    // One output directory a case: the cases run at the same time.
    let cf = |data: &Path, images: &Path, extra: &[&str]| {
        let cf_out = cf_root.join(data.file_name().unwrap_or_default());
        let mut a = args(&[
            &"cache-features",
            &"--model",
            &itm,
            &"--data",
            &data,
            &"--images",
            &images,
            &"--out",
            &cf_out,
        ]);
        a.extend(extra.iter().map(OsString::from));
        a
    };
    let bad_imgs = c.path("cf-images");
    copy_dir(&imgs, &bad_imgs);
    std::fs::write(bad_imgs.join("img2.png"), &png::rgb8()[..60]).unwrap();
    for (name, text, images, expect) in [
        (
            "t-image-id-object.json",
            "[{\"image\": \"img0.png\", \"caption\": \"a\", \"image_id\": {\"x\": 1}}]",
            imgs.clone(),
            vec!["t-image-id-object.json", "[0].image_id"],
        ),
        (
            "t-no-caption.json",
            "[{\"image\": \"img0.png\"}]",
            imgs.clone(),
            vec!["t-no-caption.json", "caption"],
        ),
        (
            "t-caption-list-empty.json",
            "[{\"image\": \"img0.png\", \"caption\": []}]",
            imgs.clone(),
            vec!["t-caption-list-empty.json", "[0].caption"],
        ),
        ("t-binary.json", "\u{0}\u{1}\u{2}garbage", imgs.clone(), vec!["t-binary.json"]),
    ] {
        let p = c.write(&format!("cf/{name}"), text);
        c.case(&format!("cache-features {name}"), cf(&p, &images, &[]), err(&expect));
    }
    // An image that does not decode is left out of the cache and listed in its index (a corpus
    // of millions has some); only a dataset with no decodable image fails.
    let bad = c.write(
        "cf/t-bad-image.json",
        "[{\"image\": \"img0.png\", \"caption\": \"a\"}, {\"image\": \"img2.png\", \"caption\": \"b\"}]",
    );
    c.case("cache-features t-bad-image.json", cf(&bad, &bad_imgs, &[]), Expect::Success);
    let all_bad = c.write("cf/t-all-bad.json", "[{\"image\": \"img2.png\", \"caption\": \"b\"}]");
    c.case(
        "cache-features t-all-bad.json",
        cf(&all_bad, &bad_imgs, &[]),
        err(&["no image decoded"]),
    );
    let good = c.write("cf/good.json", "[{\"image\": \"img0.png\", \"caption\": \"a\"}]");
    let zero = c.write("cf/zero-shard.json", "[{\"image\": \"img0.png\", \"caption\": \"a\"}]");
    c.case(
        "cache-features shard size 0",
        cf(&zero, &imgs, &["--shard-size", "0"]),
        err(&["--shard-size"]),
    );
    let file_out = c.write("cf/out-is-a-file", "x");
    let mut a = cf(&good, &imgs, &[]);
    let n = a.len();
    a[n - 1] = file_out.into_os_string();
    c.case("cache-features out is a file", a, err(&["out-is-a-file"]));
}

fn model_config_arg() -> String {
    format!("model.config={}", fixture("itm/config.json").display())
}

fn pretrain_cases(c: &mut Corpus) {
    let out = |c: &Corpus, n: &str| c.path(&format!("runs/{n}"));
    let pre = |c: &Corpus, n: &str, cfg: &str, sets: &[&str]| {
        let mut a = args(&[
            &"pretrain",
            &"--config",
            &cfg,
            &"--out",
            &out(c, n),
            &"--set",
            &model_config_arg(),
            &"--set",
            &"data.synthetic=48",
            &"--set",
            &"steps.max_steps=1",
            &"--set",
            &"schedule.warmup_steps=0",
        ]);
        for s in sets {
            a.extend(args(&[&"--set", s]));
        }
        a
    };
    let cfg_cases: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "unknown-key.toml",
            "seed = 1\n[optimizer]\nlearning_rate = 1e-4\n",
            vec!["unknown-key.toml", "learning_rate"],
        ),
        ("syntax.toml", "seed = = 1\n[optimizer\n", vec!["syntax.toml"]),
        ("mistyped.toml", "seed = \"forty-two\"\n", vec!["mistyped.toml", "expected u64"]),
        ("unknown-table.toml", "[optimiser]\nlr = 1.0\n", vec!["unknown-table.toml", "optimiser"]),
        ("binary.toml", "\u{0}\u{ff}\u{1}", vec!["binary.toml"]),
    ];
    for (name, text, expect) in cfg_cases {
        let p = c.write(&format!("cfg/{name}"), text);
        let a = pre(c, name, &p.display().to_string(), &[]);
        c.case(&format!("pretrain config {name}"), a, err(&expect));
    }
    for (name, set, expect) in [
        ("lr-negative", "optimizer.lr=-1", vec!["optimizer.lr", "must be positive"]),
        ("lr-text", "optimizer.lr=fast", vec!["optimizer.lr"]),
        ("micro-not-dividing", "batch.micro_batches=3", vec!["batch.micro_batches", "divide"]),
        ("batch-zero", "batch.size=0", vec!["batch.size"]),
        ("beta-one", "optimizer.beta2=1.0", vec!["optimizer.beta2"]),
        ("warmup-past-end", "schedule.warmup_steps=5", vec!["schedule.warmup_steps"]),
        ("keep-zero", "checkpointing.keep_last=0", vec!["checkpointing.keep_last"]),
        ("unknown-set", "guard.max_bad=3", vec!["guard.max_bad"]),
        ("no-equals", "optimizer.lr", vec!["optimizer.lr"]),
    ] {
        let a = pre(c, name, "tiny", &[set]);
        c.case(&format!("pretrain --set {name}"), a, err(&expect));
    }
    // An impossible model config.
    let heads = c.write("cfg/heads.json", {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture("itm/config.json")).unwrap())
                .unwrap();
        v["qformer_config"]["num_attention_heads"] = 5.into();
        serde_json::to_vec(&v).unwrap()
    });
    let a = pre(c, "heads", "tiny", &[&format!("model.config={}", heads.display())]);
    c.case(
        "pretrain model config heads",
        a,
        err(&["heads.json", "num_attention_heads (5) does not divide hidden_size (48)"]),
    );
    // Broken data roots.
    let root_bad = c.path("data-bad-json");
    c.write(
        "data-bad-json/annotations/karpathy_train.json",
        "[{\"image\": \"a.png\", \"caption\": ",
    );
    let a = pre(
        c,
        "data-bad-json",
        "tiny",
        &[&format!("data.root={}", root_bad.display()), "validation.every_steps=100"],
    );
    c.case("pretrain data root bad json", a, err(&["karpathy_train.json"]));
    let a = pre(
        c,
        "data-missing",
        "tiny",
        &[&format!("data.root={}", c.path("no-such-data").display())],
    );
    c.case("pretrain data root missing", a, err(&["no-such-data"]));
    // Resume from broken run directories.
    c.case(
        "pretrain resume missing dir",
        args(&[&"pretrain", &"--resume", &c.path("runs/none")]),
        err(&["runs/none", "config.toml"]),
    );
}

/// Run-directory cases need a finished run to damage.
fn resume_cases(c: &mut Corpus) {
    let base = c.path("runs/base");
    let out = blip2(args(&[
        &"pretrain",
        &"--config",
        &"tiny",
        &"--out",
        &base,
        &"--set",
        &model_config_arg(),
        &"--set",
        &"data.synthetic=48",
        &"--set",
        &"steps.max_steps=1",
        &"--set",
        &"schedule.warmup_steps=0",
        &"--set",
        &"validation.every_steps=100",
    ]));
    assert!(out.status.success(), "base run: {}", String::from_utf8_lossy(&out.stderr));
    let ckpt_rel = "checkpoints/step-000001";
    let damaged = |c: &Corpus, name: &str, f: &dyn Fn(&Path)| {
        let d = c.path(&format!("runs/{name}"));
        copy_dir(&base, &d);
        // Resume needs work left: raise max_steps in the saved config.
        let cfg = std::fs::read_to_string(d.join("config.toml")).unwrap();
        std::fs::write(d.join("config.toml"), cfg.replace("max_steps = 1", "max_steps = 2"))
            .unwrap();
        f(&d.join(ckpt_rel));
        d
    };
    let d = damaged(c, "r-state", &|ck| truncate_file(&ck.join("state.json"), 0.5));
    c.case(
        "resume truncated state.json",
        args(&[&"pretrain", &"--resume", &d]),
        err(&["state.json"]),
    );
    let d = damaged(c, "r-state-field", &|ck| {
        edit_json(&ck.join("state.json"), |v| v["step"] = "one".into())
    });
    c.case(
        "resume mistyped state.json",
        args(&[&"pretrain", &"--resume", &d]),
        err(&["state.json", "step"]),
    );
    let d = damaged(c, "r-model-trunc", &|ck| truncate_file(&ck.join("model.safetensors"), 0.5));
    c.case(
        "resume truncated model.safetensors",
        args(&[&"pretrain", &"--resume", &d]),
        err(&["model.safetensors"]),
    );
    let shaped = {
        let t = candle_core::safetensors::load(
            base.join(ckpt_rel).join("model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let mut names: Vec<String> =
            t.keys().filter(|n| t[*n].dims().len() == 2).cloned().collect();
        names.sort();
        names[0].clone()
    };
    let d = damaged(c, "r-model-shape", &|ck| {
        edit_tensors(&ck.join("model.safetensors"), |t| {
            let w = t[&shaped].narrow(0, 0, 1).unwrap();
            t.insert(shaped.clone(), w);
        })
    });
    c.case(
        "resume wrongly shaped checkpoint tensor",
        args(&[&"pretrain", &"--resume", &d]),
        err(&[&shaped, "shape"]),
    );
    let d = damaged(c, "r-model-dtype", &|ck| {
        edit_tensors(&ck.join("model.safetensors"), |t| {
            for v in t.values_mut() {
                *v = v.to_dtype(DType::F16).unwrap();
            }
        })
    });
    c.case(
        "resume wrongly typed checkpoint",
        args(&[&"pretrain", &"--resume", &d]),
        err(&["model.safetensors", "dtype"]),
    );
    let d = damaged(c, "r-wrong-model", &|ck| {
        std::fs::copy(fixture("itm/lm_head.safetensors"), ck.join("model.safetensors")).unwrap();
    });
    c.case(
        "resume checkpoint of another model",
        args(&[&"pretrain", &"--resume", &d]),
        err(&["model.safetensors"]),
    );
    let d = damaged(c, "r-optim", &|ck| std::fs::write(ck.join("optim.safetensors"), b"").unwrap());
    c.case(
        "resume zero-byte optim.safetensors",
        args(&[&"pretrain", &"--resume", &d]),
        err(&["optim.safetensors"]),
    );
    let d = damaged(c, "r-config", &|_| {});
    std::fs::write(d.join("config.toml"), "stage = \"stage9\"\n").unwrap();
    c.case(
        "resume config with impossible stage",
        args(&[&"pretrain", &"--resume", &d]),
        err(&["config.toml", "stage"]),
    );
    // Metrics and plots.
    let d = damaged(c, "r-metrics", &|_| {});
    let m = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    std::fs::write(d.join("metrics.jsonl"), format!("{{\"step\": \"x\"}}\n{m}")).unwrap();
    c.case("plot bad metrics line", args(&[&"plot", &d]), err(&["metrics.jsonl:1"]));
    c.case(
        "resume bad metrics line",
        args(&[&"pretrain", &"--resume", &d]),
        err(&["metrics.jsonl:1"]),
    );
    c.case(
        "plot missing run dir",
        args(&[&"plot", &c.path("runs/nothing-here")]),
        err(&["nothing-here"]),
    );
}

fn synth_cases(c: &mut Corpus) {
    let f = c.write("synth-file", "x");
    c.case(
        "synth into a file",
        args(&[&"synth", &"--out", &f.join("world"), &"--images", &"4"]),
        err(&["synth-file"]),
    );
    c.case(
        "synth zero images",
        args(&[&"synth", &"--out", &c.path("s0"), &"--images", &"0"]),
        err(&["--images"]),
    );
    c.case(
        "synth tiny images",
        args(&[&"synth", &"--out", &c.path("s1"), &"--image-size", &"2"]),
        err(&["--image-size"]),
    );
}

fn check(case: &Case, out: &Output) -> Result<(), String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("panicked at") || stderr.contains("RUST_BACKTRACE") {
        return Err(format!("panic: {stderr}"));
    }
    match &case.expect {
        Expect::Success => {
            if !out.status.success() {
                return Err(format!("should succeed: {stderr}"));
            }
        }
        Expect::Error(subs) => {
            if out.status.success() || out.status.code().is_none() {
                return Err(format!(
                    "should fail with an exit code; got {:?}; stderr: {stderr}",
                    out.status
                ));
            }
            let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
            if errors.len() != 1 {
                return Err(format!("want exactly one `error:` line: {stderr}"));
            }
            let missing: Vec<&String> =
                subs.iter().filter(|s| !errors[0].contains(s.as_str())).collect();
            if !missing.is_empty() {
                return Err(format!("error should name {missing:?}: {}", errors[0]));
            }
        }
    }
    Ok(())
}

#[test]
fn malformed_inputs_get_one_clear_error_and_never_panic() {
    let mut c = Corpus::new();
    image_cases(&mut c);
    text_cases(&mut c);
    model_cases(&mut c);
    llm_cases(&mut c);
    vqa_cases(&mut c);
    retrieval_cases(&mut c);
    cache_features_cases(&mut c);
    pretrain_cases(&mut c);
    resume_cases(&mut c);
    synth_cases(&mut c);
    let bad_inputs = c.cases.len();
    assert!(bad_inputs >= 50, "only {bad_inputs} cases");

    let failures = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(case) = c.cases.get(i) else { break };
                let out = blip2(&case.args);
                let stderr = String::from_utf8_lossy(&out.stderr);
                let first = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or("(ok)");
                eprintln!("[{i}] {}: {first}", case.name);
                if let Err(e) = check(case, &out) {
                    failures.lock().unwrap().push(format!("[{}] {}: {e}", i, case.name));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    eprintln!("{bad_inputs} cases, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{} of {bad_inputs} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// 16-bit, palette, alpha and grey PNGs decode to the RGB8 pixels `convert("RGB")` gives: the
/// scores equal those of the plain RGB8 (or grey8) file of the same picture.
#[test]
fn deep_palette_and_alpha_images_decode_like_their_rgb8_twins() {
    let dir = tempfile::tempdir().unwrap();
    let (g8, ga8, g16) = png::greys();
    let files = [
        ("rgb8.png", png::rgb8()),
        ("rgb16.png", png::rgb16()),
        ("rgba16.png", png::rgba16()),
        ("palette.png", png::palette()),
        ("grey8.png", g8),
        ("grey-alpha8.png", ga8),
        ("grey16.png", g16),
    ];
    let paths: Vec<PathBuf> = files
        .iter()
        .map(|(n, b)| {
            let p = dir.path().join(n);
            std::fs::write(&p, b).unwrap();
            p
        })
        .collect();
    let mut a = vec![os("score"), os("--model"), os(fixture("itm")), os("--json")];
    a.extend(image_args(&paths));
    a.extend(text_args(&TEXTS[..2]));
    let out = blip2(&a);
    let v = stdout_json(&out);
    let itc = matrix(&v["itc"]);
    for (i, twin) in [(1, 0), (2, 0), (3, 0), (5, 4), (6, 4)] {
        assert_eq!(itc[i], itc[twin], "{} differs from {}", files[i].0, files[twin].0);
    }
    assert_ne!(itc[0], itc[4], "the two pictures must differ for the comparison to mean anything");
}

/// Unreadable images inside a training set are skipped with a warning naming them and counted
/// in metrics.jsonl (`skipped_samples`); a set with nothing readable stops with a clear error.
#[test]
fn unreadable_training_images_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = blip2(args(&[&"synth", &"--out", &data, &"--images", &"48", &"--image-size", &"32"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ann: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("annotations/karpathy_train.json")).unwrap(),
    )
    .unwrap();
    let mut train: Vec<String> =
        ann.as_array().unwrap().iter().map(|r| r["image"].as_str().unwrap().to_string()).collect();
    train.sort();
    train.dedup();
    let pretrain = |run: &Path| {
        blip2(args(&[
            &"pretrain",
            &"--config",
            &"tiny",
            &"--out",
            &run,
            &"--set",
            &model_config_arg(),
            &"--set",
            &format!("data.root={}", data.display()),
            &"--set",
            &"steps.max_steps=3",
            &"--set",
            &"schedule.warmup_steps=0",
            &"--set",
            &"validation.every_steps=100",
        ]))
    };
    // Every other training image broken: truncated PNG or zero bytes.
    for (i, name) in train.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let p = data.join(name);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, if i % 4 == 0 { &bytes[..bytes.len() / 2] } else { &[][..] }).unwrap();
    }
    let run = dir.path().join("run");
    let out = pretrain(&run);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("warning: skipping sample") && err.contains("cannot decode image"),
        "{err}"
    );
    let last: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().last().unwrap(),
    )
    .unwrap();
    let warned = err.matches("warning: skipping sample").count() as u64;
    assert!(warned > 0);
    // Warnings may also come from batches prefetched past the last step.
    let counted = last["skipped_samples"].as_u64().unwrap();
    assert!(counted > 0 && counted <= warned, "{counted} counted, {warned} warned: {last}");

    // Nothing readable at all.
    for name in &train {
        std::fs::write(data.join(name), b"").unwrap();
    }
    let out = pretrain(&dir.path().join("run2"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(line.contains("no batch to train on") && line.contains("0 usable samples"), "{line}");
}
