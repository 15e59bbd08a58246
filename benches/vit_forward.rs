//! EVA ViT-g/14 forward as BLIP-2 freezes it (1408 wide, 39 layers, 16 heads, MLP 6144, patch 14,
//! 224 px -> 257 tokens), batch 1, random weights, f32 on CPU. One of the five PyTorch
//! side-by-side workloads (`tools/side_by_side.sh`, `docs/performance.md`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use workloads::{BenchCase, Scale, VitForwardCase, DEFAULT_SEED};

fn bench_vit_g(c: &mut Criterion) {
    let mut case = VitForwardCase::new(Scale::Real, DEFAULT_SEED).expect("ViT-g shape");
    let mut group = c.benchmark_group("vit_g_forward");
    group.sample_size(10).throughput(Throughput::Elements(1));
    group.bench_function("b1_224px", |b| b.iter(|| case.run().unwrap()));
    group.finish();
}

criterion_group!(benches, bench_vit_g);
criterion_main!(benches);
