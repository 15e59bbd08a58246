//! A webdataset source streamed with bounded memory. Opening it counts the usable samples of
//! every shard (one shard's index at a time per thread, then dropped): what stays resident is a
//! path and a count per shard. An epoch's pass reads the shards in a seeded order, cut into
//! windows of consecutive shards that hold at least `shuffle_buffer` samples each; a window's
//! samples are indexed when the pass reaches it and read in a seeded permutation of their own.
//! Any sample of a pass is found from its position alone (the counts give the window), so a
//! run resumes mid-shard at the exact sample, with no buffer to save and nothing to replay.

use std::path::PathBuf;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::{expand_urls, SourceRead, SourceSpec};
use crate::error::{DataError, Result};
use crate::formats::webdataset::index_shard;
use crate::item::{ImageSource, ImageTextItem};

/// The shards of a webdataset source that hold samples to train on.
#[derive(Debug, Clone)]
pub struct ShardSet {
    shards: Vec<Arc<PathBuf>>,
    /// Usable samples of each shard.
    counts: Vec<usize>,
    /// Image id of each shard's first sample: the samples are numbered in file order.
    first_id: Vec<u64>,
    /// A window of a pass closes once it holds this many samples.
    shuffle_buffer: usize,
}

/// The file name of a shard, as its samples' keys start.
fn shard_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The samples of one shard that can be trained on, numbered from `first_id`; what it left
/// out goes to `skips`. A shard that cannot be opened is left out whole, not fatal (a download
/// may miss some).
pub(crate) fn shard_items(
    path: &Arc<PathBuf>,
    first_id: u64,
    skips: &mut SourceRead,
) -> Vec<ImageTextItem> {
    let name = shard_name(path);
    let (samples, cut) = match index_shard(path) {
        Ok(indexed) => indexed,
        Err(e) => {
            skips.skip(name, &format!("shard unreadable: {e}"));
            return Vec::new();
        }
    };
    let mut items = Vec::with_capacity(samples.len());
    for s in samples {
        let key = format!("{name}/{}", s.key);
        match (s.image, s.caption) {
            (None, _) => skips.skip(key, "no image member"),
            (_, None) => skips.skip(key, "no caption (.json caption or .txt)"),
            (Some((offset, len)), Some(caption)) => {
                let image_id = first_id + items.len() as u64;
                let image = ImageSource::ShardMember { shard: path.clone(), offset, len };
                items.push(ImageTextItem { key, image, caption, image_id });
            }
        }
    }
    if let Some(e) = cut {
        skips.skip(format!("{name} (the rest)"), &format!("shard cut short: {e}"));
    }
    items
}

impl ShardSet {
    /// Counts the usable samples of every shard `spec.urls` names (shards in parallel), and
    /// what was left out.
    pub fn open(spec: &SourceSpec, shuffle_buffer: usize) -> Result<(Self, SourceRead)> {
        let urls = spec.urls.as_ref().ok_or_else(|| {
            DataError::Invalid(format!("data.sources ({}): `urls` is required", spec.name()))
        })?;
        let paths: Vec<Arc<PathBuf>> =
            expand_urls(urls)?.into_iter().map(|u| Arc::new(PathBuf::from(u))).collect();
        let counted: Vec<(usize, SourceRead)> = paths
            .par_iter()
            .map(|p| {
                let mut skips = SourceRead::default();
                let n = shard_items(p, 0, &mut skips).len();
                (n, skips)
            })
            .collect();
        let mut report = SourceRead::default();
        let mut set = ShardSet {
            shards: Vec::new(),
            counts: Vec::new(),
            first_id: Vec::new(),
            shuffle_buffer,
        };
        let mut next_id = 0u64;
        for (path, (n, skips)) in paths.into_iter().zip(counted) {
            report.absorb(skips);
            if n > 0 {
                set.shards.push(path);
                set.counts.push(n);
                set.first_id.push(next_id);
                next_id += n as u64;
            }
        }
        Ok((set, report))
    }

    /// Usable samples over all shards.
    pub fn len(&self) -> usize {
        self.counts.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples of shard `k` (in this set's file order), checked against its count: a shard
    /// rewritten while a run reads it would shift every later position.
    fn read_shard(&self, k: usize) -> Result<Vec<ImageTextItem>> {
        let mut skips = SourceRead::default();
        let items = shard_items(&self.shards[k], self.first_id[k], &mut skips);
        if items.len() != self.counts[k] {
            return Err(DataError::Tar {
                path: self.shards[k].to_path_buf(),
                message: format!(
                    "held {} usable samples when the run started and {} now: shards must not \
                     change under a run",
                    self.counts[k],
                    items.len()
                ),
            });
        }
        Ok(items)
    }

    /// Every sample in file order (the whole index in memory: for tools that list them all).
    pub fn all_items(&self) -> Result<Vec<ImageTextItem>> {
        let mut out = Vec::with_capacity(self.len());
        for k in 0..self.shards.len() {
            out.extend(self.read_shard(k)?);
        }
        Ok(out)
    }

    /// One seeded pass over every sample: shard order and window permutations are functions
    /// of `(seed, stream)`.
    pub fn pass(&self, seed: u64, stream: u64) -> ShardPass {
        let mut order: Vec<usize> = (0..self.shards.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7368_6172_645f_6f72);
        rng.set_stream(stream);
        order.shuffle(&mut rng);
        // Windows of consecutive shards in that order, each closed at `shuffle_buffer` samples.
        let (mut window_shards, mut window_samples) = (vec![0], vec![0]);
        let mut held = 0;
        for (i, &k) in order.iter().enumerate() {
            held += self.counts[k];
            if held >= self.shuffle_buffer.max(1) || i + 1 == order.len() {
                window_shards.push(i + 1);
                window_samples.push(window_samples.last().copied().unwrap_or(0) + held);
                held = 0;
            }
        }
        ShardPass { seed, stream, order, window_shards, window_samples, loaded: None }
    }
}

/// A pass over a [`ShardSet`], holding the index of one window at a time.
#[derive(Debug)]
pub struct ShardPass {
    seed: u64,
    stream: u64,
    /// Shards in reading order.
    order: Vec<usize>,
    /// Window `w` reads shards `order[window_shards[w]..window_shards[w + 1]]`, which hold
    /// samples `window_samples[w]..window_samples[w + 1]` of the pass.
    window_shards: Vec<usize>,
    window_samples: Vec<usize>,
    /// The window read now and its samples in reading order.
    loaded: Option<(usize, Vec<ImageTextItem>)>,
}

impl ShardPass {
    /// Sample `j` of the pass (`j < set.len()`).
    pub fn item(&mut self, set: &ShardSet, j: usize) -> Result<ImageTextItem> {
        let total = self.window_samples.last().copied().unwrap_or(0);
        if j >= total {
            return Err(DataError::Invalid(format!(
                "sample {j} is past the pass of {total} samples"
            )));
        }
        let w = self.window_samples.partition_point(|&start| start <= j) - 1;
        if self.loaded.as_ref().map(|(at, _)| *at) != Some(w) {
            // The previous window goes before the next is read: one window resident.
            self.loaded = None;
            let mut samples = Vec::new();
            for &k in &self.order[self.window_shards[w]..self.window_shards[w + 1]] {
                samples.extend(set.read_shard(k)?);
            }
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x7769_6e64_6f77_7321);
            rng.set_stream(self.stream);
            rng.set_word_pos((w as u128) << 32);
            samples.shuffle(&mut rng);
            self.loaded = Some((w, samples));
        }
        let (_, samples) = self.loaded.as_ref().expect("loaded above");
        samples.get(j - self.window_samples[w]).cloned().ok_or_else(|| {
            DataError::Invalid(format!("window {w} holds fewer samples than counted"))
        })
    }

    /// Samples whose index is held now: at most one window.
    pub fn resident(&self) -> usize {
        self.loaded.as_ref().map_or(0, |(_, s)| s.len())
    }
}
