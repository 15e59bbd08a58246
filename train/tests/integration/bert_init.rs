//! Starting the stage-one Q-Former from BERT (LAVIS `Blip2Base.init_Qformer` +
//! `Blip2Qformer.__init__`), against `tests/fixtures/bert-tiny` made by
//! `tools/make_tiny_bert.py`: its `expected.json` lists, for every LAVIS Q-Former tensor copied
//! from BERT, the checkpoint tensor transformers' `BertLMHeadModel.from_pretrained` loaded into it
//! (plus LAVIS's `*_query` <- text FFN copies), and how the vocabulary grew.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use qformer::masks::PaddingMask;
use qformer::model::ImageInput;
use qformer::objectives::{stage_one_losses, NegativeMode, ObjectiveConfig, PretrainBatch};
use qformer::weights::bert::{overlay, BertCheckpoint};
use qformer::weights::names::lavis_to_canonical;
use qformer::Blip2Config;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use train::init::named_vars;
use train::FreshModel;

const SEED: u64 = 3;

fn fixture(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(sub)
}

fn expected() -> serde_json::Value {
    let p = fixture("bert-tiny/expected.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn vars(fm: &FreshModel) -> HashMap<String, Var> {
    named_vars(&fm.trainable).unwrap().into_iter().collect()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// The tiny preset model started from the BERT fixture.
fn bert_model(dir: &str) -> FreshModel {
    let cfg = Blip2Config::preset("tiny").unwrap();
    let bert = BertCheckpoint::from_dir(fixture(dir), &Device::Cpu).unwrap();
    let set = bert.qformer_tensors(&cfg).unwrap();
    let fm = FreshModel::new(&cfg, SEED, &Device::Cpu).unwrap();
    overlay(&named_vars(&fm.trainable).unwrap(), &set).unwrap();
    fm
}

#[test]
fn copied_tensors_equal_their_bert_source_and_the_rest_stays_fresh() {
    let exp = expected();
    let bert_v = exp["bert_vocab_size"].as_u64().unwrap() as usize;
    // The checkpoint as safetensors reads it, independently of BertCheckpoint.
    let raw = candle_core::safetensors::load(fixture("bert-tiny/model.safetensors"), &Device::Cpu)
        .unwrap();
    let fm = bert_model("bert-tiny");
    let got = vars(&fm);
    let cfg = Blip2Config::preset("tiny").unwrap();
    let fresh = vars(&FreshModel::new(&cfg, SEED, &Device::Cpu).unwrap());

    let copied = exp["copied"].as_object().unwrap();
    assert_eq!(copied.len(), 53);
    let mut copied_canonical = std::collections::HashSet::new();
    for (lavis, src) in copied {
        let name = lavis_to_canonical(lavis).unwrap_or_else(|| panic!("no canonical {lavis}"));
        let var = got.get(&name).unwrap_or_else(|| panic!("model lacks {name} ({lavis})"));
        let want = raw.get(src.as_str().unwrap()).unwrap();
        let got_t = var.as_tensor();
        if name == "embeddings.word_embeddings.weight" || name == "cls.predictions.bias" {
            assert_eq!(got_t.dim(0).unwrap(), bert_v + 1, "{name}: vocabulary grows by one");
            assert_eq!(f32s(&got_t.narrow(0, 0, bert_v).unwrap()), f32s(want), "{name}");
        } else {
            assert_eq!(f32s(got_t), f32s(want), "{name} != {src}");
        }
        copied_canonical.insert(name);
    }
    // [DEC]: the MLM bias entry is the one transformers pads with; the embedding row is a fresh
    // N(0, 0.02) draw, here the seeded one of the fresh model.
    let bias = f32s(got["cls.predictions.bias"].as_tensor());
    assert_eq!(bias[bert_v] as f64, exp["cls_predictions_bias_new_entry"].as_f64().unwrap());
    let row = |m: &HashMap<String, Var>| {
        f32s(&m["embeddings.word_embeddings.weight"].as_tensor().narrow(0, bert_v, 1).unwrap())
    };
    assert_eq!(row(&got), row(&fresh));
    assert!(row(&got).iter().any(|&x| x != 0.0));

    // Everything else is exactly the seeded fresh init: cross-attention, query tokens, heads,
    // ln_vision, temp.
    let mut n_fresh = 0;
    for (name, var) in &got {
        if copied_canonical.contains(name) {
            continue;
        }
        assert_eq!(f32s(var.as_tensor()), f32s(fresh[name].as_tensor()), "{name} not fresh");
        n_fresh += 1;
    }
    assert_eq!(n_fresh + copied_canonical.len(), got.len());
    let cross: Vec<&String> = got.keys().filter(|n| n.contains("crossattention")).collect();
    // cross_attention_frequency 2 over 2 layers: layer 0 only, 10 tensors.
    assert_eq!(cross.len(), 10, "{cross:?}");
    for name in cross {
        let v = f32s(got[name].as_tensor());
        if name.ends_with("bias") {
            assert!(v.iter().all(|&x| x == 0.0), "{name}");
        } else if name.contains("LayerNorm.weight") {
            assert!(v.iter().all(|&x| x == 1.0), "{name}");
        } else {
            let n = v.len() as f64;
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
            let std = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
            // 1024 draws of N(0, 0.02): the sample std is within ~2% (1 sigma) of 0.02.
            assert!((0.018..0.022).contains(&std) && mean.abs() < 0.003, "{name}: {mean} {std}");
        }
    }
    assert_eq!(f32s(got["temp"].as_tensor()), vec![0.07]);
    // The copies are not fresh values in disguise: LayerNorms and biases of the fixture differ
    // from 1 / 0.
    let ln = f32s(got["qformer.encoder.layer.1.output_query.LayerNorm.weight"].as_tensor());
    assert!(ln.iter().any(|&x| x != 1.0));
}

#[test]
fn old_style_pytorch_model_bin_gives_the_same_tensors() {
    let cfg = Blip2Config::preset("tiny").unwrap();
    let st = BertCheckpoint::from_dir(fixture("bert-tiny"), &Device::Cpu).unwrap();
    let bin = BertCheckpoint::from_dir(fixture("bert-tiny-bin"), &Device::Cpu).unwrap();
    assert!(bin.source.ends_with("pytorch_model.bin"));
    let (a, b) = (st.qformer_tensors(&cfg).unwrap(), bin.qformer_tensors(&cfg).unwrap());
    assert_eq!(a.len(), b.len());
    assert_eq!(a.len(), expected()["copied"].as_object().unwrap().len());
    for name in a.names() {
        assert_eq!(f32s(a.get(name).unwrap()), f32s(b.get(name).unwrap()), "{name}");
    }
}

#[test]
fn stage_one_losses_train_every_tensor_of_the_bert_started_model() {
    let fm = bert_model("bert-tiny");
    let dev = Device::Cpu;
    let mut r = ChaCha8Rng::seed_from_u64(1);
    let (b, l) = (4, 8);
    let px: Vec<f32> = (0..b * 3 * 32 * 32).map(|_| r.random::<f32>() * 2.0 - 1.0).collect();
    let pixels = Tensor::from_vec(px, (b, 3, 32, 32), &dev).unwrap();
    // [CLS]=2 words [SEP]=3 [PAD]=0 in the hf-tiny vocabulary.
    let mut ids = Vec::new();
    let mut rows = Vec::new();
    for i in 0..b {
        let len = 5 + i % 3;
        let mut row: Vec<u32> = vec![2];
        row.extend((1..len - 1).map(|_| r.random_range(5..183u32)));
        row.push(3);
        let mask: Vec<u32> = (0..l).map(|j| (j < len) as u32).collect();
        row.resize(l, 0);
        ids.extend(row);
        rows.push(mask);
    }
    let input_ids = Tensor::from_vec(ids, (b, l), &dev).unwrap();
    let mask = PaddingMask::from_rows(&rows).unwrap();
    let batch = PretrainBatch {
        image: ImageInput::Pixels(&pixels),
        input_ids: &input_ids,
        attention_mask: &mask,
        image_ids: None,
    };
    let ocfg = ObjectiveConfig {
        negatives: NegativeMode::Sample,
        bos_token_id: 183,
        pad_token_id: 0,
        ..Default::default()
    };
    let out = stage_one_losses(&fm.model, &batch, &ocfg, true, &mut r).unwrap();
    for (what, t) in [("itc", &out.itc), ("itm", &out.itm), ("lm", &out.itg)] {
        let v = t.to_scalar::<f32>().unwrap();
        assert!(v.is_finite() && v > 0.0, "{what} = {v}");
    }
    let grads = out.total.backward().unwrap();
    let mut none = Vec::new();
    for (name, var) in vars(&fm) {
        match grads.get(var.as_tensor()) {
            Some(g) if f32s(g).iter().any(|&x| x != 0.0) => {}
            _ => none.push(name),
        }
    }
    none.sort();
    assert!(none.is_empty(), "trainable tensors without a gradient: {none:?}");
}

#[test]
fn a_bert_that_does_not_fit_is_refused_by_name() {
    let dev = Device::Cpu;
    let cfg = Blip2Config::preset("tiny").unwrap();
    let bert = BertCheckpoint::from_dir(fixture("bert-tiny"), &dev).unwrap();

    let mut wide = cfg.clone();
    wide.qformer_config.hidden_size = 48;
    let msg = bert.qformer_tensors(&wide).unwrap_err().to_string();
    assert!(msg.contains("config.json") && msg.contains("hidden_size is 32"), "{msg}");
    assert!(msg.contains("qformer_config.hidden_size is 48"), "{msg}");
    let mut vocab = cfg.clone();
    vocab.qformer_config.vocab_size = 183;
    let msg = bert.qformer_tensors(&vocab).unwrap_err().to_string();
    assert!(msg.contains("vocab_size is 183") && msg.contains("[DEC]"), "{msg}");

    // A checkpoint with one tensor missing and one misshaped: both named, with the file.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("bert-tiny/config.json"), tmp.path().join("config.json")).unwrap();
    let mut ts =
        candle_core::safetensors::load(fixture("bert-tiny/model.safetensors"), &dev).unwrap();
    ts.remove("bert.encoder.layer.1.attention.self.key.weight").unwrap();
    ts.insert(
        "bert.encoder.layer.0.output.dense.weight".into(),
        Tensor::zeros((32, 32), DType::F32, &dev).unwrap(),
    );
    ts.insert("bert.encoder.layer.9.extra".into(), Tensor::zeros(2, DType::F32, &dev).unwrap());
    let path = tmp.path().join("model.safetensors");
    candle_core::safetensors::save(&ts, &path).unwrap();
    let msg = BertCheckpoint::from_dir(tmp.path(), &dev)
        .unwrap()
        .qformer_tensors(&cfg)
        .unwrap_err()
        .to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("missing 1: bert.encoder.layer.1.attention.self.key.weight"), "{msg}");
    assert!(
        msg.contains("wrong shape 1: bert.encoder.layer.0.output.dense.weight (F32 [32, 32], expected [32, 64]"),
        "{msg}"
    );
    assert!(msg.contains("unexpected 1: bert.encoder.layer.9.extra"), "{msg}");

    let msg = BertCheckpoint::from_dir(fixture("hf-tiny/images"), &dev).unwrap_err().to_string();
    assert!(msg.contains("config.json"), "{msg}");
}
