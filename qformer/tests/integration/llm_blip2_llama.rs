//! BLIP-2 bridged into a LLaMA: a tiny `Blip2ForConditionalGeneration` directory assembled from
//! in-tree fixtures (the hf-tiny OPT checkpoint's ViT + Q-Former config sections, the llava-tiny
//! LLaMA under `language_model.` with its `text_config` as `model_type: "llama"`), loaded through
//! `Blip2LlmConfig` / `Blip2Llm`; the stage-two LM loss is finite and its gradient reaches
//! `language_projection`.
//!
//! The llava-tiny LLaMA (vocab 494) is used rather than llama-tiny/mha (vocab 100) because the
//! only LLaMA-style tokenizer in tree, `llava-tiny/tokenizer.json`, has 494 ids.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use qformer::llm::{
    llama_lm_loss, Blip2Llm, Blip2LlmConfig, LanguageModel, LanguageProjection, TextConfig,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// config.json of a BLIP-2 + LLaMA checkpoint: the hf-tiny OPT config with the llava-tiny
/// LLaMA's text config (BOS `<s>` = 1, EOS `</s>` = 2 as its tokenizer has them).
fn llama_blip2_config() -> serde_json::Value {
    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let mut cfg = read(fixtures().join("hf-tiny/opt/config.json"));
    let llava = read(fixtures().join("llava-tiny/config.json"));
    let mut text = llava["text_config"].clone();
    text["model_type"] = "llama".into();
    text["bos_token_id"] = 1.into();
    text["eos_token_id"] = 2.into();
    cfg["text_config"] = text;
    cfg.as_object_mut().unwrap().remove("image_token_index");
    cfg
}

/// `language_model.*` (LLaMA HF names) + a random `language_projection` [64, 48].
fn llama_blip2_tensors(dev: &Device) -> HashMap<String, Tensor> {
    let llava =
        candle_core::safetensors::load(fixtures().join("llava-tiny/model.safetensors"), dev)
            .unwrap();
    let mut out = HashMap::new();
    for (name, t) in llava {
        if let Some(rest) = name.strip_prefix("model.language_model.") {
            out.insert(format!("language_model.model.{rest}"), t);
        } else if name == "lm_head.weight" {
            out.insert("language_model.lm_head.weight".into(), t);
        }
    }
    out.insert(
        "language_projection.weight".into(),
        Tensor::randn(0f32, 0.1, (64, 48), dev).unwrap(),
    );
    out.insert("language_projection.bias".into(), Tensor::zeros(64, DType::F32, dev).unwrap());
    out
}

fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&llama_blip2_config()).unwrap()).unwrap();
    path
}

#[test]
fn llm_llama_text_config_parses_as_llama() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Blip2LlmConfig::from_json_file(&write_config(dir.path())).unwrap();
    assert!(matches!(cfg.text, TextConfig::Llama(_)), "{:?}", cfg.text);
    assert_eq!(cfg.llm_hidden_size(), 64);
    assert_eq!(cfg.qformer_hidden_size, 48);
    assert_eq!(cfg.num_query_tokens, 4);
}

#[test]
fn llm_llama_bridge_loss_is_finite_and_reaches_the_projection() {
    let dev = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Blip2LlmConfig::from_json_file(&write_config(dir.path())).unwrap();
    let tensors = llama_blip2_tensors(&dev);
    let mut llm =
        Blip2Llm::load(VarBuilder::from_tensors(tensors.clone(), DType::F32, &dev), &cfg).unwrap();
    assert!(matches!(llm.language_model, LanguageModel::Llama(_)));

    // A trainable projection holding the checkpoint's values.
    let mut varmap = VarMap::new();
    llm.projection = LanguageProjection::new(
        48,
        64,
        VarBuilder::from_varmap(&varmap, DType::F32, &dev).pp("language_projection"),
    )
    .unwrap();
    for name in ["language_projection.weight", "language_projection.bias"] {
        varmap.set_one(name, tensors[name].clone()).unwrap();
    }

    let q = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 4, 48), &dev).unwrap()).unwrap();
    // BOS + prompt + caption + "\n"-like rows of different lengths; BOS + 2 prompt tokens take
    // no loss.
    let texts = vec![vec![1u32, 10, 11, 12, 13, 14, 15], vec![1, 10, 11, 20, 21]];
    let prompt_lens = vec![3, 3];
    let loss = llm.opt_lm_loss(q.as_tensor(), &texts, &prompt_lens).unwrap();
    let value = loss.to_scalar::<f32>().unwrap();
    assert!(value.is_finite() && value > 0.0, "{value}");

    // The stage-two route for OPT-style texts on a LLaMA is `llama_lm_loss`: same number.
    let LanguageModel::Llama(m) = &llm.language_model else { unreachable!() };
    let direct = llama_lm_loss(&llm.projection, m, q.as_tensor(), &texts, &prompt_lens).unwrap();
    assert_eq!(direct.to_scalar::<f32>().unwrap(), value);

    let grads = loss.backward().unwrap();
    let data = varmap.data().lock().unwrap();
    for name in ["language_projection.weight", "language_projection.bias"] {
        let g =
            grads.get(data[name].as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(norm.is_finite() && norm > 0.0, "{name}: gradient norm {norm}");
    }
    let gq = grads.get(q.as_tensor()).expect("no gradient for the query outputs");
    assert!(gq.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
    drop(data);

    // A text that does not start with the config's BOS is refused.
    let err = llm.opt_lm_loss(q.as_tensor(), &[vec![10, 11, 12], vec![1, 10, 11]], &[1, 1]);
    assert!(err.unwrap_err().to_string().contains("BOS"));
}

#[test]
fn llm_llama_prompts_are_left_padded_for_generation() {
    let dev = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Blip2LlmConfig::from_json_file(&write_config(dir.path())).unwrap();
    let llm =
        Blip2Llm::load(VarBuilder::from_tensors(llama_blip2_tensors(&dev), DType::F32, &dev), &cfg)
            .unwrap();
    let q = Tensor::randn(0f32, 1.0, (2, 4, 48), &dev).unwrap();
    let (embeds, mask) = llm.prompt_inputs(&q, &[vec![1, 10, 11], vec![1]]).unwrap();
    assert_eq!(embeds.dims(), &[2, 7, 64]);
    let mask = mask.to_vec2::<u32>().unwrap();
    assert_eq!(mask[0], vec![1; 7]);
    assert_eq!(mask[1], vec![1, 1, 1, 1, 0, 0, 1]);
}
