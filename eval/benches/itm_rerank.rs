//! ITM re-ranking throughput (pairs/s) at the real BLIP-2 Q-Former size with random weights: hidden 768,
//! 12 layers, 32 queries, vision width 1408 with 257 tokens, texts of 35 tokens (no padding to trim).
//!
//!     cargo bench -p eval --bench itm_rerank

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eval::retrieval::rerank::itm_logits_of_pairs;
use eval::retrieval::{ImageGallery, TextGallery};
use qformer::masks::PaddingMask;
use qformer::model::{Blip2Qformer, ModelParts};
use qformer::Blip2Config;

const PAIRS: usize = 32;

fn bench_itm(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut cfg = Blip2Config::default();
    cfg.qformer_config.use_qformer_text_input = true;
    cfg.qformer_config.hidden_dropout_prob = 0.0;
    cfg.qformer_config.attention_probs_dropout_prob = 0.0;
    let parts = ModelParts { vision: false, text: true, stage_one_heads: true, lm_head: false };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let model = Blip2Qformer::new(&cfg, parts, 1e-6, vb.clone(), vb).expect("random model");

    let (n_img, n_txt, tokens, len) = (8, 8, 257, 35);
    let dv = cfg.vision_config.hidden_size;
    let images = ImageGallery {
        image_feats: Tensor::randn(0f32, 1.0, (n_img, cfg.num_query_tokens, 256), &dev).unwrap(),
        image_embeds: Tensor::randn(0f32, 1.0, (n_img, tokens, dv), &dev).unwrap(),
    };
    let ids: Vec<u32> = (0..n_txt * len).map(|i| (1000 + 37 * i % 20000) as u32).collect();
    let ids = Tensor::from_vec(ids, (n_txt, len), &dev).unwrap();
    let texts = TextGallery::encode(&model, ids, PaddingMask::all_keep(n_txt, len), n_txt).unwrap();
    let pairs: Vec<(usize, usize)> = (0..PAIRS).map(|p| (p % n_img, (p / n_img) % n_txt)).collect();

    let mut group = c.benchmark_group("itm_rerank");
    group.sample_size(10);
    group.throughput(Throughput::Elements(PAIRS as u64));
    group.bench_function(format!("{PAIRS}_pairs_batch_{PAIRS}"), |b| {
        b.iter(|| itm_logits_of_pairs(&model, &images, &texts, &pairs, PAIRS, &mut |_| {}).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench_itm);
criterion_main!(benches);
