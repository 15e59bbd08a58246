//! Greedy generation throughput of an OPT-125m-shaped decoder (random weights): 32 query
//! embeddings + 8 prompt tokens, 20 new tokens, batch 1, f32 on CPU. One of the five PyTorch
//! side-by-side workloads (`tools/side_by_side.sh`, `docs/performance.md`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use workloads::{OptGenerateCase, Scale, DEFAULT_SEED};

fn bench_opt_greedy(c: &mut Criterion) {
    let case = OptGenerateCase::new(Scale::Real, DEFAULT_SEED).expect("OPT-125m shape");
    let mut group = c.benchmark_group("opt125m_greedy");
    group.sample_size(10).throughput(Throughput::Elements(20));
    group.bench_function("32q+8prompt_20new", |b| {
        b.iter(|| {
            let out = case.generate().unwrap();
            assert_eq!(out.len(), 20);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_opt_greedy);
criterion_main!(benches);
