//! Q-Former forward at the real BLIP-2 size (BERT-base: hidden 768, 12 layers, 12 heads, cross-
//! attention every 2nd layer to 1408-wide features), 32 queries only (the ITC image pass /
//! what feeds the LLM), batch 8 of ViT-g features [8, 257, 1408], random weights, f32 on CPU.
//! One of the five PyTorch side-by-side workloads (`tools/side_by_side.sh`, `docs/performance.md`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use workloads::{QformerForwardCase, Scale, DEFAULT_SEED};

fn bench_qformer_queries(c: &mut Criterion) {
    let case = QformerForwardCase::new(Scale::Real, DEFAULT_SEED).expect("real-size Q-Former");
    let mut group = c.benchmark_group("qformer_forward");
    group.sample_size(10).throughput(Throughput::Elements(8));
    group.bench_function("b8_q32_feat257x1408", |b| {
        b.iter(|| {
            let out = case.forward().unwrap();
            assert_eq!(out.dims(), &[8, 32, 768]);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_qformer_queries);
criterion_main!(benches);
