//! A LLaMA-7B MLP projection (`gate_proj`, 4096 -> 11008) with its weight held in bf16 against
//! f32, for the choice in `qformer::nn::half_weight` (docs/performance.md, "Frozen weights in
//! bf16"): the dot-product kernel and the widened GEMM at decode (1 row), around the crossover
//! (16, 64 rows) and at a LLaVA prefill (600 rows), with candle's own bf16 matmul (bf16
//! activations) and the f32 weight (the layer before this change) beside them.

use candle_core::{DType, Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use qformer::nn::half_weight::{matmul_half_t_with, Regime};
use qformer::nn::Linear;

fn bench_half_linear(c: &mut Criterion) {
    let (k, n) = (4096, 11008);
    let dev = Device::Cpu;
    let w32 = Tensor::randn(0f32, 0.02, (n, k), &dev).unwrap();
    let wbf = w32.to_dtype(DType::BF16).unwrap();
    let f32_layer = Linear::new(w32.clone(), None);
    let mut group = c.benchmark_group("gate_proj_4096x11008");
    group.sample_size(10);
    for m in [1usize, 16, 64, 600] {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
        let xb = x.to_dtype(DType::BF16).unwrap();
        group.bench_with_input(BenchmarkId::new("f32_weight", m), &m, |b, _| {
            b.iter(|| f32_layer.forward(&x).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("bf16_dot", m), &m, |b, _| {
            b.iter(|| matmul_half_t_with(&x, &wbf, Regime::Dot).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("bf16_widened_gemm", m), &m, |b, _| {
            b.iter(|| matmul_half_t_with(&x, &wbf, Regime::WidenedGemm).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("candle_bf16_matmul", m), &m, |b, _| {
            b.iter(|| xb.matmul(&wbf.t().unwrap()).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_half_linear);
criterion_main!(benches);
