//! Q-Former forward at the real BLIP-2 size (BERT-base: hidden 768, 12 layers, 12 heads, cross-
//! attention every 2nd layer to 1408-wide features), 32 queries only (the ITC image pass /
//! what feeds the LLM), batch 8 of ViT-g features [8, 257, 1408], random weights, f32 on CPU.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qformer::masks::{AdditiveMask, MaskMode};
use qformer::model::{QFormer, QFormerInput};
use qformer::QFormerConfig;

const BATCH: usize = 8;
const QUERIES: usize = 32;
const VISION_TOKENS: usize = 257;

fn bench_qformer_queries(c: &mut Criterion) {
    let dev = Device::Cpu;
    let cfg = QFormerConfig::default();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let qformer = QFormer::new(&cfg, vb).expect("real-size Q-Former");
    let queries = (Tensor::randn(0f32, 1.0, (BATCH, QUERIES, cfg.hidden_size), &dev).unwrap()
        * 0.02)
        .unwrap();
    let image =
        Tensor::randn(0f32, 1.0, (BATCH, VISION_TOKENS, cfg.encoder_hidden_size), &dev).unwrap();
    let mask = AdditiveMask::new(MaskMode::UniModal, QUERIES, None, BATCH, &dev).unwrap();
    let inp = QFormerInput {
        query_embeds: Some(&queries),
        input_ids: None,
        self_mask: &mask,
        image_embeds: Some(&image),
        past_query_kv: None,
    };
    let mut group = c.benchmark_group("qformer_forward");
    group.sample_size(10).throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("b8_q32_feat257x1408", |b| {
        b.iter(|| {
            let out = qformer.forward_eval(&inp).unwrap();
            assert_eq!(out.query_output().unwrap().dims(), &[BATCH, QUERIES, cfg.hidden_size]);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_qformer_queries);
criterion_main!(benches);
