//! `blip2 bench loader --data DIR`: samples/s of the stage-one input pipeline on the webdataset
//! shards of DIR (decode, LAVIS's train augmentation at 224 px, tokenization, batching), the
//! same work `tools/bench_loader_torch.py time DIR` times in PyTorch (webdataset + torchvision).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use datasets::image::{ImageProcessorConfig, TrainAugment};
use datasets::sources::{read_source, SourceKind, SourceSpec};
use datasets::text::TextTokenizer;
use datasets::{Loader, LoaderConfig, LoaderState};

/// One pass over the shards after one warm-up batch; prints samples/s.
pub fn run(
    data: &Path,
    workers: usize,
    batch: usize,
    tokenizer: &Path,
    as_json: bool,
) -> Result<()> {
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
    let read = read_source(&spec)?;
    let tokenizer = TextTokenizer::from_file(tokenizer, 32)
        .with_context(|| format!("reading the tokenizer {}", tokenizer.display()))?;
    let config = LoaderConfig {
        batch_size: batch,
        prefetch: 2,
        workers,
        augment: Some(TrainAugment::default()),
        image: ImageProcessorConfig::square(224),
        ..LoaderConfig::default()
    };
    let loader = Loader::new(read.items, tokenizer, config);
    let mut epoch = loader.epoch(LoaderState { seed: 0, epoch: 0, position: 0 });
    let first = epoch.next().context("no batch")??;
    let (mut n, t) = (0usize, Instant::now());
    for b in epoch {
        n += b?.batch_size;
    }
    let seconds = t.elapsed().as_secs_f64();
    let out = json!({
        "pipeline": "blip2",
        "workers": workers,
        "samples": n,
        "seconds": seconds,
        "samples_per_sec": n as f64 / seconds,
        "warmup_batch": first.batch_size,
    });
    if as_json {
        println!("{out}");
    } else {
        println!(
            "{n} samples in {seconds:.2} s: {:.1} samples/s ({workers} workers)",
            n as f64 / seconds
        );
    }
    Ok(())
}
