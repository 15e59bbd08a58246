//! The training data of a run: a Karpathy caption JSON + image directory (`data.root` holding
//! `annotations/karpathy_train.json` and the images), or a synthetic world written into the run
//! directory (`data.synthetic = N`), read by the datasets loader with the LAVIS train transform,
//! and handed to the training loop one step at a time ([`LoaderBatches`]).

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use datasets::formats::karpathy::read_karpathy_train;
use datasets::formats::{read_cc_sbu_align, CC_SBU_ALIGN_FILE};
use datasets::image::{ImageProcessorConfig, TrainAugment};
use datasets::sources::{open_source, Mixture, SourceItems};
use datasets::synth::{write_world, SynthConfig};
use datasets::text::TextTokenizer;
use datasets::{
    EpochIter, ImageSource, ImageTextBatch, ImageTextItem, Loader, LoaderConfig, LoaderState,
    SkippedSample,
};
use train::RunConfig;
use train::{Batches, Fetched, StepBatch};

use crate::common::atomic::replace_file;
use crate::common::train_error;

/// `tokenizer`: the Q-Former's (stage one); `None` in stage two, whose captions are tokenized
/// with the LLM's tokenizer.
pub fn loader(
    cfg: &RunConfig,
    run_root: &Path,
    tokenizer: Option<TextTokenizer>,
    image_size: usize,
) -> Result<Loader> {
    let data = caption_items(cfg, run_root)?;
    let config = LoaderConfig {
        batch_size: cfg.batch.size,
        prefetch: cfg.data.prefetch_batches,
        workers: cfg.data.num_workers,
        shuffle: true,
        augment: cfg.data.augment.then(TrainAugment::default),
        image: ImageProcessorConfig::square(image_size),
        ..LoaderConfig::default()
    };
    data.into_loader(tokenizer, config)
}

/// A run's training samples.
pub enum CaptionData {
    /// One list, read in one shuffle an epoch.
    Items(Vec<ImageTextItem>),
    /// `data.sources`, each with its weight, mixed by [`Mixture`].
    Sources(Vec<(SourceItems, f64)>),
}

impl CaptionData {
    /// Samples of an epoch.
    pub fn len(&self) -> usize {
        match self {
            CaptionData::Items(items) => items.len(),
            CaptionData::Sources(sources) => sources.iter().map(|(s, _)| s.len()).sum(),
        }
    }

    /// Whether any source is streamed (its samples are checked batch by batch, not up front).
    pub fn streams(&self) -> bool {
        match self {
            CaptionData::Items(_) => false,
            CaptionData::Sources(sources) => {
                sources.iter().any(|(s, _)| matches!(s, SourceItems::Streamed(_)))
            }
        }
    }

    /// Keeps the items `keep` accepts, in every source held in memory.
    pub fn retain(&mut self, mut keep: impl FnMut(&ImageTextItem) -> bool) {
        match self {
            CaptionData::Items(items) => items.retain(keep),
            CaptionData::Sources(sources) => {
                for (source, _) in sources {
                    if let SourceItems::Listed(items) = source {
                        items.retain(&mut keep);
                    }
                }
            }
        }
    }

    /// Every sample once, source after source (a streamed source's whole index in memory).
    pub fn into_items(self) -> Result<Vec<ImageTextItem>> {
        match self {
            CaptionData::Items(items) => Ok(items),
            CaptionData::Sources(sources) => Ok(Mixture::new(sources)?.into_items()?),
        }
    }

    pub fn into_loader(
        self,
        tokenizer: Option<TextTokenizer>,
        config: LoaderConfig,
    ) -> Result<Loader> {
        Ok(match (self, tokenizer) {
            (CaptionData::Items(items), Some(t)) => Loader::new(items, t, config),
            (CaptionData::Items(items), None) => Loader::without_tokenizer(items, config),
            (CaptionData::Sources(sources), t) => Loader::mixed(Mixture::new(sources)?, t, config),
        })
    }
}

/// `data.sources`, each opened (webdataset shards counted, the others read) and reported in
/// `RUN_DIR/data_report.json` (samples, and what was left out by reason and by key).
fn source_items(cfg: &RunConfig, run_root: &Path) -> Result<CaptionData> {
    let (mut sources, mut report) = (Vec::new(), Vec::new());
    for (i, spec) in cfg.data.sources.iter().enumerate() {
        let (items, read) = open_source(spec, cfg.data.shuffle_buffer)
            .with_context(|| format!("data.sources[{i}] ({})", spec.name()))?;
        println!(
            "data.sources[{i}] {}: {} samples, {} left out (weight {})",
            spec.name(),
            items.len(),
            read.skipped_total(),
            spec.weight
        );
        report.push(serde_json::json!({
            "source": spec.name(),
            "weight": spec.weight,
            "samples": items.len(),
            "streamed": matches!(items, SourceItems::Streamed(_)),
            "skipped": read.skipped_total(),
            "skipped_by_reason": read.skipped,
            "skipped_keys": read.skipped_keys.iter().map(|s| serde_json::json!({"key": s.key, "reason": s.reason})).collect::<Vec<_>>(),
        }));
        sources.push((items, spec.weight));
    }
    let path = run_root.join(DATA_REPORT);
    replace_file(&path, |tmp| {
        let text = serde_json::to_string_pretty(&serde_json::json!({ "sources": report }))?;
        std::fs::write(tmp, text).with_context(|| format!("writing {}", tmp.display()))
    })?;
    if sources.iter().all(|(s, _)| s.is_empty()) {
        bail!("data.sources: no sample to train on (see {})", path.display());
    }
    Ok(CaptionData::Sources(sources))
}

/// What the sources gave and left out, in the run directory.
pub const DATA_REPORT: &str = "data_report.json";

/// The training captions: `data.root/annotations/karpathy_train.json` (or MiniGPT-4's
/// `filter_cap.json` + `image/` when the root is a `cc_sbu_align` directory), or the synthetic world
/// of `data.synthetic` written into the run directory (once: a resumed run reads the same).
pub fn caption_items(cfg: &RunConfig, run_root: &Path) -> Result<CaptionData> {
    if !cfg.data.sources.is_empty() {
        return source_items(cfg, run_root);
    }
    let root = match (&cfg.data.root, cfg.data.synthetic) {
        (Some(root), _) => root.clone(),
        (None, Some(n)) => {
            let dir = run_root.join("synth");
            if !dir.is_dir() {
                // Written aside and renamed: a run killed mid-write must not resume on half a world.
                let tmp = run_root.join("synth.tmp");
                if tmp.exists() {
                    std::fs::remove_dir_all(&tmp)
                        .with_context(|| format!("removing the partial {}", tmp.display()))?;
                }
                let sc = SynthConfig {
                    images: n as usize,
                    seed: cfg.seed,
                    image_size: cfg.data.image_size,
                    ..Default::default()
                };
                write_world(&tmp, &sc).with_context(|| {
                    format!("writing the synthetic world to {}", tmp.display())
                })?;
                std::fs::rename(&tmp, &dir)
                    .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
            }
            dir
        }
        (None, None) => bail!("no training data: set data.root (a directory with annotations/karpathy_train.json) or data.synthetic"),
    };
    let ann = root.join("annotations/karpathy_train.json");
    let align = root.join(CC_SBU_ALIGN_FILE);
    let (items, ann) = if !ann.is_file() && align.is_file() {
        // MiniGPT-4's cc_sbu_align as it is shipped.
        (read_cc_sbu_align(&root)?, align)
    } else {
        let items = read_karpathy_train(&ann, &root)
            .with_context(|| format!("reading {}", ann.display()))?;
        (items, ann)
    };
    if items.is_empty() {
        bail!("{}: no training captions", ann.display());
    }
    Ok(CaptionData::Items(items))
}

/// The held-out split for validation losses: `annotations/karpathy_val.json` of the data root
/// (first caption of each image), read in file order with the eval transform (no random crop).
pub fn val_loader(
    cfg: &RunConfig,
    run_root: &Path,
    tokenizer: TextTokenizer,
    image_size: usize,
) -> Result<Loader> {
    let root = match &cfg.data.root {
        Some(r) => r.clone(),
        None => run_root.join("synth"),
    };
    let ann = root.join("annotations/karpathy_val.json");
    let split = datasets::formats::karpathy::read_karpathy_eval(&ann)
        .with_context(|| format!("reading the validation split {}", ann.display()))?;
    let items: Vec<ImageTextItem> = split
        .images
        .iter()
        .enumerate()
        .filter_map(|(i, im)| {
            im.captions.first().map(|c| ImageTextItem {
                key: im.image.clone(),
                image: ImageSource::Path(root.join(&im.image)),
                caption: c.clone(),
                image_id: i as u64,
            })
        })
        .collect();
    if items.len() < 2 {
        bail!(
            "{}: validation needs at least 2 images (ITM negatives), found {}",
            ann.display(),
            items.len()
        );
    }
    let config = LoaderConfig {
        batch_size: cfg.batch.eval_size,
        workers: cfg.data.num_workers,
        image: ImageProcessorConfig::square(image_size),
        ..LoaderConfig::default()
    };
    Ok(Loader::new(items, tokenizer, config))
}

/// Builds one micro-batch from samples `range` of a loader batch.
pub type MicroBuilder<'a, B> = &'a dyn Fn(&ImageTextBatch, Range<usize>) -> Result<B>;

/// The loader's batches as the loop's steps: each split into `micro_batches` consecutive
/// micro-batches of `ceil(B / micro_batches)` samples.
pub struct LoaderBatches<'a, B> {
    loader: &'a Loader,
    seed: u64,
    epoch: Option<EpochIter>,
    micro_batches: usize,
    /// A micro-batch with fewer samples passes its whole batch over (ITM takes its negative from
    /// another sample of the same micro-batch).
    min_micro_samples: usize,
    build: MicroBuilder<'a, B>,
    /// Where the samples the loader could not read are listed.
    skip_log: Option<PathBuf>,
}

impl<'a, B> LoaderBatches<'a, B> {
    pub fn new(
        loader: &'a Loader,
        seed: u64,
        micro_batches: usize,
        min_micro_samples: usize,
        build: MicroBuilder<'a, B>,
    ) -> Self {
        Self { loader, seed, epoch: None, micro_batches, min_micro_samples, build, skip_log: None }
    }

    /// Lists every sample the loader leaves out (an image that does not decode, ...) in
    /// `RUN_DIR/data_skipped.jsonl`, one `{"key", "reason", "epoch", "position"}` line each; a
    /// resumed run first drops the lines past its cursor, which it reads again.
    pub fn with_skip_log(mut self, run_root: &Path) -> Self {
        self.skip_log = Some(run_root.join(SKIP_LOG));
        self
    }
}

/// The samples a run's loader left out while training.
pub const SKIP_LOG: &str = "data_skipped.jsonl";

/// Keeps the lines of the skip log at or before `cursor` (in epoch, then position).
fn truncate_skip_log(path: &Path, cursor: &LoaderState) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            let (e, p) = (
                v["epoch"].as_u64().unwrap_or(u64::MAX),
                v["position"].as_u64().unwrap_or(u64::MAX),
            );
            (e, p) <= (cursor.epoch, cursor.position as u64)
        })
        .collect();
    replace_file(path, |tmp| {
        let body: String = kept.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(tmp, body).with_context(|| format!("writing {}", tmp.display()))
    })
}

fn append_skips(path: &Path, skipped: &[SkippedSample], at: &LoaderState) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for s in skipped {
        let line = serde_json::json!({"key": s.key, "reason": s.reason, "epoch": at.epoch, "position": at.position});
        writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Brings `RUN_DIR/data_report.json` (written when the sources were opened) up to a checkpoint
/// at `cursor`: the samples each source gave this epoch so far, and the samples left out while
/// reading (the skip log), by reason.
fn update_report(skip_log: &Path, loader: &Loader, cursor: &LoaderState) -> Result<()> {
    let Some(root) = skip_log.parent() else { return Ok(()) };
    let path = root.join(DATA_REPORT);
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
    let mut report: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let mut by_reason: std::collections::BTreeMap<String, u64> = Default::default();
    let log = std::fs::read_to_string(skip_log).unwrap_or_default();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        // By kind: the reason without the sample's own key and the decoder's details.
        let (key, reason) = (v["key"].as_str().unwrap_or(""), v["reason"].as_str().unwrap_or(""));
        let reason = reason.strip_prefix(key).unwrap_or(reason).trim_start_matches([':', ' ']);
        let kind = reason.split(':').next().unwrap_or(reason).trim();
        *by_reason.entry(kind.to_string()).or_insert(0) += 1;
    }
    if let (Some(drawn), Some(sources)) =
        (loader.drawn_by_source(cursor), report["sources"].as_array_mut())
    {
        for (source, n) in sources.iter_mut().zip(drawn) {
            source["read_this_epoch"] = serde_json::json!(n);
        }
    }
    report["reading"] = serde_json::json!({
        "epoch": cursor.epoch,
        "position": cursor.position,
        "skipped": by_reason.values().sum::<u64>(),
        "skipped_by_reason": by_reason,
        "skipped_keys_in": SKIP_LOG,
    });
    replace_file(&path, |tmp| {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(tmp, text).with_context(|| format!("writing {}", tmp.display()))
    })
}

/// The consecutive sample ranges of the micro-batches of a batch of `n`.
pub fn micro_ranges(n: usize, micro_batches: usize) -> Vec<Range<usize>> {
    let per = n.div_ceil(micro_batches.max(1)).max(1);
    (0..n).step_by(per).map(|start| start..(start + per).min(n)).collect()
}

impl<B> Batches for LoaderBatches<'_, B> {
    type Batch = B;

    fn start_epoch(&mut self, epoch: u64, cursor: Option<LoaderState>) -> train::Result<()> {
        let at = cursor.unwrap_or(LoaderState { seed: self.seed, epoch, position: 0 });
        if let (Some(log), Some(c)) = (&self.skip_log, &cursor) {
            truncate_skip_log(log, c).map_err(train_error)?;
        }
        self.epoch = Some(self.loader.epoch(at));
        Ok(())
    }

    fn checkpointed(&mut self, cursor: Option<&LoaderState>) -> train::Result<()> {
        match (&self.skip_log, cursor) {
            (Some(log), Some(c)) => update_report(log, self.loader, c).map_err(train_error),
            _ => Ok(()),
        }
    }

    fn next(&mut self) -> train::Result<Fetched<B>> {
        let Some(epoch) = self.epoch.as_mut() else {
            return Err(train::Error::Msg("the loader was read before its epoch started".into()));
        };
        let batch = match epoch.next() {
            None => return Ok(Fetched::EndOfEpoch),
            Some(b) => b.map_err(|e| train_error(e.into()))?,
        };
        let skipped = batch.skipped.len() as u64;
        if let (Some(log), false) = (&self.skip_log, batch.skipped.is_empty()) {
            append_skips(log, &batch.skipped, &batch.state_after).map_err(train_error)?;
        }
        let ranges = micro_ranges(batch.batch_size, self.micro_batches);
        if ranges.is_empty() || ranges.iter().any(|r| r.len() < self.min_micro_samples) {
            return Ok(Fetched::PassedOver {
                reason: format!(
                    "batch with {} usable samples passed over: each of its {} micro-batches \
                     needs at least {} ({skipped} skipped)",
                    batch.batch_size, self.micro_batches, self.min_micro_samples
                ),
                skipped,
                cursor: Some(batch.state_after),
            });
        }
        let micro = ranges
            .into_iter()
            .map(|r| (self.build)(&batch, r))
            .collect::<Result<Vec<_>>>()
            .map_err(train_error)?;
        Ok(Fetched::Step(StepBatch {
            micro,
            samples: batch.batch_size as u64,
            skipped,
            cursor: Some(batch.state_after),
        }))
    }
}
