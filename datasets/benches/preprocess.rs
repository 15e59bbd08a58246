//! Decode + bicubic resize + normalise throughput (images/s) on a 640x480 JPEG, as HF
//! `BlipImageProcessor` does per image. Compare with `tools/bench_hf_preprocess.py`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use datasets::image::{decode_bytes, eval_transform, DecodeLimits, ImageProcessorConfig};

fn bench(c: &mut Criterion) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/preprocess/photo640x480.jpg");
    let bytes = std::fs::read(&path).expect("fixture image");
    let mut group = c.benchmark_group("preprocess_640x480_jpeg");
    group.throughput(Throughput::Elements(1));
    for size in [224usize, 364] {
        let cfg = ImageProcessorConfig::square(size);
        group.bench_function(format!("decode_resize_normalize_{size}"), |b| {
            b.iter(|| {
                let img = decode_bytes(&bytes, "bench", DecodeLimits::default()).unwrap();
                eval_transform(&img, &cfg)
            })
        });
    }
    let img = decode_bytes(&bytes, "bench", DecodeLimits::default()).unwrap();
    group.bench_function("decode_only", |b| {
        b.iter(|| decode_bytes(&bytes, "bench", DecodeLimits::default()).unwrap())
    });
    for size in [224usize, 364] {
        let cfg = ImageProcessorConfig::square(size);
        group.bench_function(format!("resize_normalize_{size}"), |b| {
            b.iter(|| eval_transform(&img, &cfg))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
