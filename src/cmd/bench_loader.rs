//! `blip2 bench loader --data DIR`: samples/s of the stage-one input pipeline on the webdataset
//! shards of DIR, streamed as `blip2 pretrain` streams them (decode, LAVIS's train augmentation
//! at 224 px, tokenization, batching), the same work `tools/bench_loader_torch.py time DIR`
//! times in PyTorch (webdataset + torchvision). `--index-only` walks the streamed order without
//! decoding: how fast the shards are counted and indexed, and how much memory that takes.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use datasets::image::{ImageProcessorConfig, TrainAugment};
use datasets::sources::{open_source, Mixture, SourceKind, SourceSpec};
use datasets::text::TextTokenizer;
use datasets::{Loader, LoaderConfig, LoaderState};

use super::bench::BenchArgs;

/// The process's peak resident memory in MiB (Linux `VmHWM`; `None` elsewhere).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// One pass over the shards after one warm-up batch (or, `--index-only`, over their index);
/// prints samples/s and the peak memory.
pub fn run(args: &BenchArgs, data: &Path, tokenizer: &Path) -> Result<()> {
    let mut shards: Vec<String> = std::fs::read_dir(data)
        .with_context(|| format!("reading {}", data.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tar"))
        .map(|p| p.display().to_string())
        .collect();
    shards.sort();
    if shards.is_empty() {
        bail!(
            "{}: no .tar shards (make them with tools/bench_loader_torch.py make)",
            data.display()
        );
    }
    let spec = SourceSpec {
        kind: SourceKind::Webdataset,
        urls: Some(shards.join("::")),
        annotations: None,
        path: None,
        images: None,
        weight: 1.0,
    };
    let t = Instant::now();
    let (source, _) = open_source(&spec, args.shuffle_buffer)?;
    let open_s = t.elapsed().as_secs_f64();
    let mixture = Mixture::new(vec![(source, 1.0)])?;
    let (n, seconds, warmup) = if args.index_only {
        let mixture = Arc::new(mixture);
        let mut reader = mixture.reader(0, 0);
        let t = Instant::now();
        for _ in 0..mixture.len() {
            reader.next_item()?;
        }
        (mixture.len(), t.elapsed().as_secs_f64(), 0)
    } else {
        let tokenizer = TextTokenizer::from_file(tokenizer, 32)
            .with_context(|| format!("reading the tokenizer {}", tokenizer.display()))?;
        let config = LoaderConfig {
            batch_size: args.batch,
            prefetch: 2,
            workers: args.workers,
            augment: Some(TrainAugment::default()),
            image: ImageProcessorConfig::square(224),
            ..LoaderConfig::default()
        };
        let loader = Loader::mixed(mixture, Some(tokenizer), config);
        let mut epoch = loader.epoch(LoaderState { seed: 0, epoch: 0, position: 0 });
        let first = epoch.next().context("no batch")??;
        let (mut n, t) = (0usize, Instant::now());
        for b in epoch {
            n += b?.batch_size;
        }
        (n, t.elapsed().as_secs_f64(), first.batch_size)
    };
    let peak = peak_rss_mib();
    let out = json!({
        "pipeline": if args.index_only { "blip2-index" } else { "blip2" },
        "workers": args.workers,
        "shards": shards.len(),
        "samples": n,
        "open_seconds": open_s,
        "seconds": seconds,
        "samples_per_sec": n as f64 / seconds,
        "warmup_batch": warmup,
        "peak_rss_mib": peak,
    });
    if args.json {
        println!("{out}");
    } else {
        println!(
            "{n} samples in {seconds:.2} s: {:.1} samples/s ({} workers); shards counted in \
             {open_s:.2} s; peak memory {} MiB",
            n as f64 / seconds,
            args.workers,
            peak.map_or("?".into(), |p| format!("{p:.0}"))
        );
    }
    Ok(())
}
