//! ITM throughput (pairs/s) at the real BLIP-2 Q-Former size with random weights: hidden 768,
//! 12 layers, 32 queries, vision width 1408 with 257 tokens.
//! - `itm_pairs/64_pairs`: the ITM one of the five PyTorch side-by-side workloads
//!   (`tools/side_by_side.sh`, `docs/performance.md`; 64 pairs of 32-token texts, one image each);
//! - `itm_rerank`: the retrieval re-ranking loop over galleries (texts of 35 tokens).
//!
//!     cargo bench -p eval --bench itm_rerank

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eval::retrieval::rerank::itm_logits_of_pairs;
use eval::retrieval::{ImageGallery, TextGallery};
use qformer::masks::PaddingMask;
use workloads::{
    seeded_tensor, stage_one_model, text_ids, BenchCase, ItmCase, Scale, DEFAULT_SEED,
};

const PAIRS: usize = 32;

fn bench_itm_pairs(c: &mut Criterion) {
    let mut case = ItmCase::new(Scale::Real, DEFAULT_SEED).expect("random model");
    let mut group = c.benchmark_group("itm_pairs");
    group.sample_size(10).throughput(Throughput::Elements(64));
    group.bench_function("64_pairs", |b| b.iter(|| case.run().unwrap()));
    group.finish();
}

fn bench_itm_rerank(c: &mut Criterion) {
    let dev = Device::Cpu;
    let seed = DEFAULT_SEED;
    let (_vars, model) = stage_one_model(Scale::Real, seed, false, false, &dev).unwrap();
    let cfg = model.config().clone();

    let (n_img, n_txt, tokens, len) = (8, 8, 257, 35);
    let dv = cfg.vision_config.hidden_size;
    let images = ImageGallery {
        image_feats: seeded_tensor(
            seed,
            "feats",
            (n_img, cfg.num_query_tokens, 256),
            0.0,
            1.0,
            &dev,
        )
        .unwrap(),
        image_embeds: seeded_tensor(seed, "embeds", (n_img, tokens, dv), 0.0, 1.0, &dev).unwrap(),
    };
    let ids: Tensor = text_ids(Scale::Real, seed, n_txt, len, &dev).unwrap();
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

criterion_group!(benches, bench_itm_pairs, bench_itm_rerank);
criterion_main!(benches);
