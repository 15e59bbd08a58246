//! EVA ViT-g/14 forward as BLIP-2 freezes it (1408 wide, 39 layers, 16 heads, MLP 6144, patch 14,
//! 224 px -> 257 tokens), batch 1, random weights, f32 on CPU.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qformer::model::VisionTransformer;
use qformer::VisionConfig;

fn bench_vit_g(c: &mut Criterion) {
    let dev = Device::Cpu;
    let cfg = VisionConfig::default();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let vit = VisionTransformer::new(&cfg, vb).expect("ViT-g shape");
    let pixels = Tensor::randn(0f32, 1.0, (1, 3, cfg.image_size, cfg.image_size), &dev).unwrap();
    let mut group = c.benchmark_group("vit_g_forward");
    group.sample_size(10).throughput(Throughput::Elements(1));
    group.bench_function("b1_224px", |b| {
        b.iter(|| {
            let out = vit.forward(&pixels).unwrap();
            assert_eq!(out.dims(), &[1, cfg.num_positions(), cfg.hidden_size]);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_vit_g);
criterion_main!(benches);
