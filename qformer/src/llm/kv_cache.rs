//! Key/value caches for incremental decoding, kept outside the modules so the same weights train.

use candle_core::{Result, Tensor};

/// Per-layer self-attention keys and values, each `[B, heads, S, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self { layers: vec![None; num_layers] }
    }

    /// Number of cached positions (0 when empty).
    pub fn seq_len(&self) -> usize {
        self.layers.iter().flatten().next().map(|(k, _)| k.dim(2).unwrap_or(0)).unwrap_or(0)
    }

    pub fn layer(&self, i: usize) -> Option<&(Tensor, Tensor)> {
        self.layers.get(i).and_then(|l| l.as_ref())
    }

    pub fn set_layer(&mut self, i: usize, k: Tensor, v: Tensor) {
        if self.layers.len() <= i {
            self.layers.resize(i + 1, None);
        }
        self.layers[i] = Some((k, v));
    }

    /// Keep batch rows `idx` (in that order): beam search reorders beams with this.
    pub fn index_select(&self, idx: &Tensor) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Some((k, v)) => Ok(Some((k.index_select(idx, 0)?, v.index_select(idx, 0)?))),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }
}

/// Append new keys/values `[B, h, T, d]` to a layer's cache; returns the full keys and values.
pub(crate) fn append(
    past: Option<&(Tensor, Tensor)>,
    k: Tensor,
    v: Tensor,
) -> Result<(Tensor, Tensor)> {
    match past {
        Some((pk, pv)) => Ok((Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?)),
        None => Ok((k, v)),
    }
}
