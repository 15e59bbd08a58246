//! Reading the frozen-ViT feature cache of `blip2 cache-features` (`index.json` + shards).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};

/// Features `[N, Dv]` by image key (the Karpathy `image` path joined with the image root).
pub struct FeatureCache {
    by_key: HashMap<String, Tensor>,
}

impl FeatureCache {
    pub fn load(dir: &Path, dev: &Device) -> Result<Self> {
        let ipath = dir.join("index.json");
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&ipath).with_context(|| format!("reading {}", ipath.display()))?,
        )
        .with_context(|| format!("parsing {}", ipath.display()))?;
        let shards = index["shards"]
            .as_array()
            .with_context(|| format!("{}: no `shards` array", ipath.display()))?;
        let mut by_key = HashMap::new();
        for shard in shards {
            let file = shard["file"]
                .as_str()
                .with_context(|| format!("{}: shard without `file`", ipath.display()))?;
            let path = dir.join(file);
            let tensors = candle_core::safetensors::load(&path, dev)
                .with_context(|| format!("reading {}", path.display()))?;
            let feats = tensors
                .get("features")
                .with_context(|| format!("{}: no tensor `features`", path.display()))?;
            let keys = shard["keys"]
                .as_array()
                .with_context(|| format!("{}: shard {file} without `keys`", ipath.display()))?;
            anyhow::ensure!(
                keys.len() == feats.dim(0)?,
                "{}: {} keys but {} feature rows",
                path.display(),
                keys.len(),
                feats.dim(0)?
            );
            for (i, k) in keys.iter().enumerate() {
                let k =
                    k.as_str().with_context(|| format!("{}: non-string key", ipath.display()))?;
                by_key.insert(k.to_string(), feats.get(i)?);
            }
        }
        Ok(Self { by_key })
    }

    /// `[B, N, Dv]` for `keys`, in order.
    pub fn batch(&self, keys: &[String]) -> Result<Tensor> {
        let rows = keys
            .iter()
            .map(|k| {
                self.by_key
                    .get(k)
                    .cloned()
                    .with_context(|| format!("data.features: no cached features for image {k}"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&rows, 0)?)
    }
}
