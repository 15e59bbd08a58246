//! Deterministic, resumable, prefetching batch loader.
//!
//! The epoch's order (one list's permutation, or a [`Mixture`] over listed and streamed sources)
//! is recomputed from `(seed, epoch)`, so a `LoaderState` saved in a checkpoint is enough to
//! replay exactly the samples a run would have seen. Decoding and
//! preprocessing run on a producer thread (rayon inside a batch) and reach the consumer in
//! order through a bounded channel. A sample that cannot be read or decoded is skipped and
//! reported in its batch (`skipped`), never silently dropped.

use std::sync::Arc;
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::image::clip::{
    clip_transform, expand_to_square, mean_background, ClipImageProcessorConfig,
};
use crate::image::{
    decode_bytes, decode_file, eval_transform, DecodeLimits, ImageProcessorConfig, TrainAugment,
};
use crate::item::{ImageSource, ImageTextItem};
use crate::sources::{Mixture, MixtureReader};
use crate::text::{CaptionCleaner, Padding, TextTokenizer};

/// The data cursor a checkpoint saves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub seed: u64,
    pub epoch: u64,
    /// Index into the epoch permutation of the next sample to read.
    pub position: usize,
}

/// Loader settings.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    /// Threads that decode and augment a batch's images: a pool of the loader's own, so that
    /// decoding does not queue behind the model's kernels; 0 shares rayon's global pool.
    pub workers: usize,
    pub shuffle: bool,
    /// Train transform (random resized crop + flip) instead of the eval resize.
    pub augment: Option<TrainAugment>,
    pub image: ImageProcessorConfig,
    /// HF `CLIPImageProcessor` instead of `augment` / `image` (LLaVA, which never augments);
    /// the batch's size is its crop, so it must center-crop.
    pub clip: Option<ClipImageProcessorConfig>,
    /// With `clip`: LLaVA's `image_aspect_ratio = "pad"`, the image pasted onto a square of the
    /// processor's mean colour first.
    pub pad_to_square: bool,
    pub caption: CaptionCleaner,
    pub padding: Padding,
    pub limits: DecodeLimits,
}

/// One batch at a time, in file order, on the shared pool, BLIP's eval transform at its default
/// size, LAVIS-cleaned captions padded to the longest: override what a loader needs.
impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 1,
            prefetch: 1,
            workers: 0,
            shuffle: false,
            augment: None,
            image: ImageProcessorConfig::default(),
            clip: None,
            pad_to_square: false,
            caption: CaptionCleaner::default(),
            padding: Padding::Longest,
            limits: DecodeLimits::default(),
        }
    }
}

/// A sample that was left out of its batch, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedSample {
    pub key: String,
    pub reason: String,
}

/// One batch, channels-first pixels `[batch, 3, H, W]` and `[batch, seq_len]` token ids.
#[derive(Debug, Clone)]
pub struct ImageTextBatch {
    pub pixel_values: Vec<f32>,
    pub batch_size: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub input_ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
    pub seq_len: usize,
    pub image_ids: Vec<u64>,
    pub keys: Vec<String>,
    pub captions: Vec<String>,
    pub skipped: Vec<SkippedSample>,
    /// Cursor after this batch: save it to resume right after it.
    pub state_after: LoaderState,
}

/// Permutation of `0..n` for an epoch.
pub fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch);
        order.shuffle(&mut rng);
    }
    order
}

/// Decides before decoding whether a sample can be trained on; `Err(reason)` leaves it out of
/// its batch with that reason (for streamed sources, whose samples are not all known up front).
pub type SampleCheck = Arc<dyn Fn(&ImageTextItem) -> Result<(), String> + Send + Sync>;

/// Where an epoch's samples come from.
#[derive(Clone)]
enum Samples {
    /// One list, read in a single shuffle (or in file order).
    Listed(Arc<Vec<ImageTextItem>>),
    /// Several sources mixed by weight, streamed or listed.
    Mixed(Arc<Mixture>),
}

/// A deterministic, resumable batch loader.
pub struct Loader {
    samples: Samples,
    /// `(rank, world)`: this process reads every `world`-th sample of the epoch's order from
    /// `rank` on, so the ranks of a data-parallel run split each epoch without overlap.
    rank: (usize, usize),
    /// `None`: batches carry cleaned captions but no Q-Former token ids (stage two tokenizes
    /// them with the LLM's tokenizer).
    tokenizer: Option<Arc<TextTokenizer>>,
    check: Option<SampleCheck>,
    config: Arc<LoaderConfig>,
}

impl Loader {
    pub fn new(items: Vec<ImageTextItem>, tokenizer: TextTokenizer, config: LoaderConfig) -> Self {
        Self::over(Samples::Listed(Arc::new(items)), Some(tokenizer), config)
    }

    /// A loader whose batches have captions but no token ids (`seq_len` 0).
    pub fn without_tokenizer(items: Vec<ImageTextItem>, config: LoaderConfig) -> Self {
        Self::over(Samples::Listed(Arc::new(items)), None, config)
    }

    /// A loader over the epoch `mixture` reads (`tokenizer` as in [`Loader::new`] and
    /// [`Loader::without_tokenizer`]).
    pub fn mixed(mixture: Mixture, tokenizer: Option<TextTokenizer>, config: LoaderConfig) -> Self {
        Self::over(Samples::Mixed(Arc::new(mixture)), tokenizer, config)
    }

    fn over(samples: Samples, tokenizer: Option<TextTokenizer>, config: LoaderConfig) -> Self {
        Loader {
            samples,
            rank: (0, 1),
            tokenizer: tokenizer.map(Arc::new),
            check: None,
            config: Arc::new(config),
        }
    }

    /// Leaves out, batch by batch, the samples `check` refuses.
    pub fn with_check(mut self, check: SampleCheck) -> Self {
        self.check = Some(check);
        self
    }

    /// Reads rank `rank` of `world`'s share of every epoch (see [`Loader::len`]).
    pub fn for_rank(mut self, rank: usize, world: usize) -> crate::Result<Self> {
        if world == 0 || rank >= world {
            return Err(crate::DataError::Invalid(format!(
                "rank {rank} of a world of {world}: need rank < world"
            )));
        }
        self.rank = (rank, world);
        Ok(self)
    }

    /// Samples of an epoch over all ranks.
    fn total(&self) -> usize {
        match &self.samples {
            Samples::Listed(items) => items.len(),
            Samples::Mixed(m) => m.len(),
        }
    }

    /// Samples of an epoch for this rank.
    pub fn len(&self) -> usize {
        let (rank, world) = self.rank;
        (self.total() + world - 1 - rank) / world
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// How many of the samples before `state`'s position each source gave, over all ranks
    /// (`None`: one list, no sources).
    pub fn drawn_by_source(&self, state: &LoaderState) -> Option<Vec<usize>> {
        let Samples::Mixed(m) = &self.samples else { return None };
        let mut reader = m.reader(state.seed, state.epoch);
        reader.skip((state.position * self.rank.1).min(m.len()));
        Some(reader.taken().to_vec())
    }

    /// Iterate the rest of the epoch named by `state`, starting at `state.position`.
    pub fn epoch(&self, state: LoaderState) -> EpochIter {
        let (tx, rx) = crossbeam_channel::bounded(self.config.prefetch.max(1));
        let samples = self.samples.clone();
        let tokenizer = self.tokenizer.clone();
        let check = self.check.clone();
        let config = self.config.clone();
        let (rank, world) = self.rank;
        let len = self.len();
        let handle = std::thread::spawn(move || {
            let pool = match config.workers {
                0 => None,
                n => match rayon::ThreadPoolBuilder::new().num_threads(n).build() {
                    Ok(p) => Some(p),
                    Err(e) => {
                        let _ = tx.send(Err(crate::DataError::Invalid(format!(
                            "cannot start {n} loader threads: {e}"
                        ))));
                        return;
                    }
                },
            };
            let mut pos = state.position.min(len);
            let mut order = EpochOrder::new(&samples, &config, state, rank + pos * world);
            let bs = config.batch_size.max(1);
            while pos < len {
                let end = (pos + bs).min(len);
                let mut items = Vec::with_capacity(end - pos);
                for p in pos..end {
                    match order.take(world, p + 1 < len) {
                        Ok(item) => items.push(item),
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
                let cursor = LoaderState { position: end, ..state };
                let build = || {
                    build_batch(items, pos, tokenizer.as_deref(), check.as_ref(), &config, cursor)
                };
                let batch = match &pool {
                    Some(p) => p.install(build),
                    None => build(),
                };
                if tx.send(batch).is_err() {
                    return;
                }
                pos = end;
            }
        });
        EpochIter { rx, handle: Some(handle) }
    }
}

/// The samples of an epoch in reading order, one slot at a time.
enum EpochOrder {
    Listed { items: Arc<Vec<ImageTextItem>>, order: Vec<usize>, next: usize },
    Mixed(Box<MixtureReader>),
}

impl EpochOrder {
    /// At slot `start` of the epoch `state` names.
    fn new(samples: &Samples, config: &LoaderConfig, state: LoaderState, start: usize) -> Self {
        match samples {
            Samples::Listed(items) => EpochOrder::Listed {
                order: epoch_order(items.len(), state.seed, state.epoch, config.shuffle),
                items: items.clone(),
                next: start,
            },
            Samples::Mixed(m) => {
                let mut reader = m.reader(state.seed, state.epoch);
                reader.skip(start);
                EpochOrder::Mixed(Box::new(reader))
            }
        }
    }

    /// The sample at the current slot; then, if `more` follow for this rank, passes over the
    /// other ranks' `world - 1` slots.
    fn take(&mut self, world: usize, more: bool) -> crate::Result<ImageTextItem> {
        let gap = if more { world - 1 } else { 0 };
        match self {
            EpochOrder::Listed { items, order, next } => {
                let item = items[order[*next]].clone();
                *next += 1 + gap;
                Ok(item)
            }
            EpochOrder::Mixed(reader) => {
                let (_, item) = reader.next_item()?;
                reader.skip(gap);
                Ok(item)
            }
        }
    }
}

/// Receives the prepared batches of one epoch, in order.
pub struct EpochIter {
    rx: crossbeam_channel::Receiver<crate::Result<ImageTextBatch>>,
    handle: Option<JoinHandle<()>>,
}

impl Iterator for EpochIter {
    type Item = crate::Result<ImageTextBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        // Disconnect first so a producer blocked on a full queue wakes up and exits.
        let (_, dead) = crossbeam_channel::bounded(0);
        self.rx = dead;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The decoded pixels of `item`, wherever they lie.
pub fn load_pixels(
    item: &ImageTextItem,
    limits: DecodeLimits,
) -> crate::Result<crate::image::RgbImage8> {
    match &item.image {
        ImageSource::Path(p) => decode_file(p, limits),
        ImageSource::Bytes(b) => decode_bytes(b, &item.key, limits),
        ImageSource::ShardMember { shard, offset, len } => {
            let bytes = read_member(shard, *offset, *len)?;
            decode_bytes(&bytes, &item.key, limits)
        }
        ImageSource::Url(u) => Err(crate::DataError::Image {
            what: item.key.clone(),
            message: format!("{u} is a URL: download it first (img2dataset)"),
        }),
    }
}

/// `len` bytes at `offset` of `path`.
fn read_member(path: &std::path::Path, offset: u64, len: u64) -> crate::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e| crate::DataError::Io { path: path.to_path_buf(), source: e };
    let mut file = std::fs::File::open(path).map_err(io)?;
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut bytes = vec![0u8; len as usize];
    file.read_exact(&mut bytes).map_err(io)?;
    Ok(bytes)
}

fn build_batch(
    items: Vec<ImageTextItem>,
    first_position: usize,
    tokenizer: Option<&TextTokenizer>,
    check: Option<&SampleCheck>,
    config: &LoaderConfig,
    cursor: LoaderState,
) -> crate::Result<ImageTextBatch> {
    let results: Vec<_> = items
        .par_iter()
        .enumerate()
        .map(|(k, item)| {
            if let Some(Err(reason)) = check.map(|c| c(item)) {
                return Err(reason);
            }
            let img = load_pixels(item, config.limits).map_err(|e| e.to_string())?;
            let tensor = match (&config.clip, &config.augment) {
                (Some(clip), _) if config.pad_to_square => {
                    let background = mean_background(&clip.image_mean);
                    clip_transform(&expand_to_square(&img, background), clip)
                }
                (Some(clip), _) => clip_transform(&img, clip),
                (None, Some(aug)) => {
                    // One stream per (seed, epoch, position): independent of thread timing.
                    let mut rng = ChaCha8Rng::seed_from_u64(cursor.seed ^ 0x9e37_79b9_7f4a_7c15);
                    rng.set_stream(cursor.epoch);
                    rng.set_word_pos(((first_position + k) as u128) << 16);
                    aug.apply(&img, &config.image, &mut rng)
                }
                (None, None) => eval_transform(&img, &config.image),
            };
            Ok::<_, String>(tensor)
        })
        .collect();
    let (h, w) = match &config.clip {
        Some(clip) => (clip.crop_size.height, clip.crop_size.width),
        None => (config.image.size.height, config.image.size.width),
    };
    let mut batch = ImageTextBatch {
        pixel_values: Vec::with_capacity(items.len() * 3 * h * w),
        batch_size: 0,
        channels: 3,
        height: h,
        width: w,
        input_ids: Vec::new(),
        attention_mask: Vec::new(),
        seq_len: 0,
        image_ids: Vec::new(),
        keys: Vec::new(),
        captions: Vec::new(),
        skipped: Vec::new(),
        state_after: cursor,
    };
    for (item, res) in items.into_iter().zip(results) {
        match res {
            Ok(t) => {
                batch.pixel_values.extend_from_slice(&t.data);
                batch.image_ids.push(item.image_id);
                batch.captions.push(config.caption.clean(&item.caption));
                batch.keys.push(item.key);
            }
            Err(reason) => {
                eprintln!("warning: skipping sample {}: {reason}", item.key);
                batch.skipped.push(SkippedSample { key: item.key, reason });
            }
        }
    }
    batch.batch_size = batch.keys.len();
    if let (true, Some(tokenizer)) = (batch.batch_size > 0, tokenizer) {
        let texts: Vec<&str> = batch.captions.iter().map(String::as_str).collect();
        let tokens = tokenizer.encode(&texts, config.padding)?;
        batch.input_ids = tokens.input_ids;
        batch.attention_mask = tokens.attention_mask;
        batch.seq_len = tokens.seq_len;
    }
    Ok(batch)
}
