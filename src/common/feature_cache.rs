//! Frozen-ViT features by image: the cache of `blip2 cache-features`, read by `blip2 pretrain`
//! (`data.features`), shards of `features [n, N, Dv]` with an `index.json` that both sides read
//! and write through [`FeatureIndex`]; and the quickstart's, computed once in memory.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::atomic::replace_file;

pub const INDEX_FILE: &str = "index.json";
/// What the cached tensors are.
pub const WHAT: &str = "frozen ViT output before ln_vision, eval transform";

/// `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureIndex {
    /// The model directory whose ViT computed the features.
    pub model: String,
    pub what: String,
    pub shards: Vec<FeatureShard>,
    /// Images that did not decode, left out of the cache.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedImage>,
}

/// An image left out of the cache, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkippedImage {
    pub key: String,
    pub reason: String,
}

/// One safetensors file: row i of its `features` tensor is image `keys[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureShard {
    pub file: String,
    pub keys: Vec<String>,
    pub image_ids: Vec<u64>,
    /// SHA-256 of the file as written (hex): a reader refuses a shard that does not match its
    /// index. Absent in caches written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl FeatureIndex {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(INDEX_FILE);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// Written aside, synced and renamed, so a reader never sees half an index.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(INDEX_FILE);
        let json = serde_json::to_string_pretty(self)?;
        replace_file(&path, |tmp| {
            std::fs::write(tmp, &json).with_context(|| format!("writing {}", tmp.display()))
        })
    }
}

/// The bytes of `path`, which must be a regular file (a FIFO or a device would hang or never
/// end).
fn read_regular(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(meta.is_file(), "{}: not a regular file", path.display());
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Features `[N, Dv]` by image key (the Karpathy `image` path joined with the image root): read
/// from a cache directory, or computed in memory (the quickstart).
pub struct FeatureCache {
    by_key: HashMap<String, Tensor>,
    device: Device,
}

impl FeatureCache {
    /// Row i of `features` `[n, N, Dv]` is image `keys[i]`.
    pub fn from_rows(features: &Tensor, keys: &[String]) -> Result<Self> {
        ensure!(
            keys.len() == features.dim(0)?,
            "{} keys but {} feature rows",
            keys.len(),
            features.dim(0)?
        );
        let by_key = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Ok((k.clone(), features.get(i)?)))
            .collect::<Result<_>>()?;
        Ok(Self { by_key, device: features.device().clone() })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn load(dir: &Path, dev: &Device) -> Result<Self> {
        let index = FeatureIndex::read(dir)?;
        let mut by_key = HashMap::new();
        for shard in &index.shards {
            // Only a file of the cache itself: no path out of the directory.
            let plain =
                Path::new(&shard.file).file_name().is_some_and(|n| n == shard.file.as_str());
            ensure!(
                plain && shard.file != "." && shard.file != "..",
                "{}: shard file {:?} is not a file name inside the cache",
                dir.join(INDEX_FILE).display(),
                shard.file
            );
            let path = dir.join(&shard.file);
            let bytes = read_regular(&path)?;
            if let Some(want) = &shard.sha256 {
                let got = sha256_hex(&bytes);
                ensure!(
                    &got == want,
                    "{}: does not match {} (sha256 {got}, the index says {want}): the cache \
                     changed after it was written; re-run cache-features",
                    path.display(),
                    dir.join(INDEX_FILE).display()
                );
            }
            let tensors = candle_core::safetensors::load_buffer(&bytes, dev)
                .with_context(|| format!("reading {}", path.display()))?;
            let feats = tensors
                .get("features")
                .with_context(|| format!("{}: no tensor `features`", path.display()))?;
            ensure!(
                shard.keys.len() == feats.dim(0)?,
                "{}: {} keys but {} feature rows",
                path.display(),
                shard.keys.len(),
                feats.dim(0)?
            );
            for (i, k) in shard.keys.iter().enumerate() {
                by_key.insert(k.clone(), feats.get(i)?);
            }
        }
        Ok(Self { by_key, device: dev.clone() })
    }

    /// `[B, N, Dv]` for `keys`, in order.
    pub fn batch<K: AsRef<str>>(&self, keys: &[K]) -> Result<Tensor> {
        let rows = keys
            .iter()
            .map(|k| {
                let k = k.as_ref();
                self.by_key.get(k).cloned().with_context(|| format!("no features for image {k}"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&rows, 0)?)
    }
}
