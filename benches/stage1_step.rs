//! One stage-one training step at the real BLIP-2 size on cached ViT-g features (B=8, text 32):
//! ITC + ITM (3B rows, hardest negatives) + ITG forward, backward, AdamW, through
//! `train::optimizer_step` over the `train::tasks::StageOne` task; random seeded weights, f32 on
//! CPU. One of the five PyTorch side-by-side workloads (`tools/side_by_side.sh`,
//! `docs/performance.md`); the PyTorch side runs LAVIS 1.0.2 `Blip2Qformer.forward` and torch's
//! AdamW on the same shapes.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use workloads::{Scale, Stage1StepCase, DEFAULT_SEED};

fn bench_stage_one_step(c: &mut Criterion) {
    let mut case =
        Stage1StepCase::new(Scale::Real, DEFAULT_SEED).expect("real-size stage-one model");
    let mut group = c.benchmark_group("stage1_step");
    group.sample_size(10).throughput(Throughput::Elements(8));
    group.bench_function("b8_text32_feat257x1408", |b| {
        b.iter(|| {
            let loss = case.step().unwrap();
            assert!(loss.is_finite());
        })
    });
    group.finish();
}

criterion_group!(benches, bench_stage_one_step);
criterion_main!(benches);
