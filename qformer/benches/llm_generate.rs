//! Greedy generation throughput of an OPT-125m-shaped decoder (random weights): 32 query
//! embeddings + 8 prompt tokens, 20 new tokens, batch 1, f32 on CPU.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qformer::llm::{generate, GenerationConfig, OptConfig, OptForCausalLm};

const NEW_TOKENS: usize = 20;

fn bench_opt_greedy(c: &mut Criterion) {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let cfg = OptConfig::opt_125m();
    let model = OptForCausalLm::load(vb, &cfg).expect("OPT-125m shape");
    let queries =
        (Tensor::randn(0f32, 1.0, (1, 32, cfg.hidden_size), &dev).unwrap() * 0.02).unwrap();
    let prompt = Tensor::from_vec((100u32..108).collect::<Vec<_>>(), (1, 8), &dev).unwrap();
    let embeds = Tensor::cat(&[&queries, &model.embed(&prompt).unwrap()], 1).unwrap();
    let mask = Tensor::ones((1, 40), DType::U32, &dev).unwrap();
    // No EOS: always 20 new tokens.
    let gen = GenerationConfig {
        max_new_tokens: NEW_TOKENS,
        eos_token_ids: vec![],
        ..GenerationConfig::default()
    };
    let mut group = c.benchmark_group("opt125m_greedy");
    group.sample_size(10).throughput(Throughput::Elements(NEW_TOKENS as u64));
    group.bench_function("32q+8prompt_20new", |b| {
        b.iter(|| {
            let out = generate(&model, &embeds, &mask, &gen).unwrap();
            assert_eq!(out[0].len(), NEW_TOKENS);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_opt_greedy);
criterion_main!(benches);
