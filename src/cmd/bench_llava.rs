//! `blip2 bench llava-generate`: LLaVA-1.5-7B shapes (CLIP ViT-L/14-336 tower, `mlp2x_gelu`
//! projector, LLaMA-7B) with random weights held as a frozen checkpoint is (matrices in
//! `--dtype`, norms and biases in f32), one image and a prompt, prefill then greedy decoding,
//! timed the way `tools/bench_hf_llava_generate.py` times HF `LlavaForConditionalGeneration`.
//!
//! - **prefill**: vision tower, projector, the merge of the image features into the prompt
//!   embeddings and the LLM over the whole prompt, up to the first token's logits (LM head on the
//!   last position only, as HF `generate` does);
//! - **decode**: the `--new-tokens - 1` single-token steps after it, through the KV cache.
//!
//! Peak RSS is `VmHWM`: weights, KV cache, activations and allocator slack.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use qformer::llava::{LlavaConfig, LlavaForConditionalGeneration};
use qformer::llm::IncrementalDecoder;
use rayon::prelude::*;
use serde_json::json;

use super::bench::{peak_rss_mb, BenchArgs};

/// LLaVA-1.5-7B (`llava-hf/llava-1.5-7b-hf`'s config), or a tiny stand-in for tests; `layers`
/// shortens both the tower and the LLM.
fn config(tiny: bool, layers: Option<usize>) -> Result<LlavaConfig> {
    let (vision, text) = if tiny {
        (
            json!({"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                   "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 28,
                   "patch_size": 14, "layer_norm_eps": 1e-5}),
            json!({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                   "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 320,
                   "max_position_embeddings": 4096, "rms_norm_eps": 1e-5}),
        )
    } else {
        (
            json!({"model_type": "clip_vision_model", "hidden_size": 1024,
                   "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "image_size": 336, "patch_size": 14, "layer_norm_eps": 1e-5}),
            json!({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                   "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                   "vocab_size": 32064, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5}),
        )
    };
    let (mut vision, mut text) = (vision, text);
    if let Some(n) = layers {
        if n == 0 {
            bail!("--layers must be at least 1");
        }
        vision["num_hidden_layers"] = json!(n);
        text["num_hidden_layers"] = json!(n);
    }
    let image_token = if tiny { 300 } else { 32000 };
    Ok(LlavaConfig::from_json(json!({
        "model_type": "llava",
        "vision_config": vision,
        "text_config": text,
        "image_token_index": image_token,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
    }))?)
}

/// Random weights made on request, as a frozen checkpoint would be loaded
/// (`qformer::weights::frozen_var_builder`): matrices in `store`, everything else in the
/// builder's dtype; norms get their `Init::Const`. Values are uniform with HF's `std` of 0.02,
/// seeded by the tensor's name.
struct RandomWeights {
    store: DType,
    seed: u64,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl RandomWeights {
    fn make(
        &self,
        s: &Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Init::Const(v) = h {
            return Tensor::full(v as f32, s.clone(), dev)?.to_dtype(dtype);
        }
        let n = s.elem_count();
        let key = name.bytes().fold(self.seed, |a, b| splitmix(a ^ b as u64));
        // Uniform on [-a, a] has std a / sqrt(3).
        let a = 0.02f32 * 3f32.sqrt();
        let value = |i: usize| {
            let r = splitmix(key ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
            ((r >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
        };
        let matrix = s.rank() == 2;
        let store = if matrix { self.store } else { dtype };
        let t = match store {
            DType::BF16 => {
                let mut v = vec![half::bf16::ZERO; n];
                v.par_iter_mut().enumerate().for_each(|(i, x)| *x = half::bf16::from_f32(value(i)));
                Tensor::from_vec(v, s.clone(), dev)?
            }
            DType::F16 => {
                let mut v = vec![half::f16::ZERO; n];
                v.par_iter_mut().enumerate().for_each(|(i, x)| *x = half::f16::from_f32(value(i)));
                Tensor::from_vec(v, s.clone(), dev)?
            }
            _ => {
                let mut v = vec![0f32; n];
                v.par_iter_mut().enumerate().for_each(|(i, x)| *x = value(i));
                Tensor::from_vec(v, s.clone(), dev)?.to_dtype(store)?
            }
        };
        Ok(t)
    }
}

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.make(&s, name, h, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape ({name})")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

fn argmax(logits: &Tensor) -> Result<u32> {
    Ok(logits.flatten_all()?.argmax(0)?.to_scalar::<u32>()?)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn run(args: &BenchArgs, threads: usize) -> Result<()> {
    let store = match args.dtype.as_str() {
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        "f32" => DType::F32,
        other => bail!("--dtype {other:?} is not one of bf16, f16, f32"),
    };
    if args.new_tokens == 0 {
        bail!("--new-tokens must be at least 1");
    }
    if args.prompt_tokens == 0 {
        bail!("--prompt-tokens must be at least 1 (the BOS token)");
    }
    let cfg = config(args.tiny, args.layers)?;
    let dev = Device::Cpu;

    let t = Instant::now();
    let backend = RandomWeights { store, seed: args.seed };
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, dev.clone());
    let model = LlavaForConditionalGeneration::load(vb, &cfg).context("building LLaVA")?;
    let build_s = t.elapsed().as_secs_f64();

    // BOS, the image's tokens, then the rest of the prompt (fixed ids: the values do not matter).
    let image_tokens = cfg.tokens_per_image();
    let mut ids = vec![1u32];
    ids.extend(std::iter::repeat_n(cfg.image_token_index, image_tokens));
    ids.extend((1..args.prompt_tokens).map(|i| 100 + (i as u32 % 200)));
    let l = ids.len();
    let side = cfg.vision_config.image_size;
    let pixels: Vec<f32> = (0..3 * side * side).map(|i| ((i % 97) as f32 / 48.0) - 1.0).collect();
    let pv = Tensor::from_vec(pixels, (1, 3, side, side), &dev)?;
    let ids_t = Tensor::from_vec(ids, (1, l), &dev)?;
    let mask = Tensor::ones((1, l), DType::U32, &dev)?;

    let lm = model.language_model();
    let t = Instant::now();
    let feats = model.image_features(&pv)?;
    let embeds = model.merge_image_features(&ids_t, &feats)?;
    let (logits, mut state) = lm.prefill(&embeds, &mask)?;
    let mut next = argmax(&logits)?;
    let prefill_s = t.elapsed().as_secs_f64();
    let mut generated = vec![next];
    let t = Instant::now();
    for _ in 1..args.new_tokens {
        let (logits, s) = lm.step(&[next], state)?;
        state = s;
        next = argmax(&logits)?;
        generated.push(next);
    }
    let decode_s = t.elapsed().as_secs_f64();
    let steps = args.new_tokens - 1;
    let tc = &cfg.text_config;
    let out = json!({
        "workload": "llava-generate",
        "dtype": args.dtype,
        "llm_layers": tc.num_hidden_layers,
        "vision_layers": cfg.vision_config.num_hidden_layers,
        "hidden_size": tc.hidden_size,
        "threads": threads,
        "prompt_tokens": args.prompt_tokens,
        "image_tokens": image_tokens,
        "seq_len": l,
        "new_tokens": args.new_tokens,
        "generated": generated,
        "build_s": build_s,
        "prefill_s": prefill_s,
        "decode_s": decode_s,
        "decode_tokens_per_s": if steps > 0 { json!(steps as f64 / decode_s) } else { json!(null) },
        "weight_dtype": format!("{:?}", lm.weight_dtype()).to_lowercase(),
        "peak_rss_mb": peak_rss_mb()?,
        "peak_live_mb": crate::GLOBAL.peak_bytes() as f64 / (1024.0 * 1024.0),
        "cpu_model": cpu_model(),
        "tiny": args.tiny,
    });
    if args.json {
        println!("{out}");
    } else {
        println!(
            "llava-generate ({} LLM layers, {}): prefill {prefill_s:.2} s over {l} tokens, decode \
             {:.3} tokens/s, {threads} threads, peak RSS {:.0} MB",
            tc.num_hidden_layers,
            args.dtype,
            out["decode_tokens_per_s"].as_f64().unwrap_or(f64::NAN),
            out["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
        );
    }
    Ok(())
}
