//! Training data as it lies on disk, several sources mixed with weights (`[[data.sources]]`):
//! webdataset shards (read in place), Karpathy JSON, pairs JSONL, CapFilt JSON and img2dataset
//! tables. Each source becomes its samples (a list in memory, or a [`ShardSet`] streamed a
//! window at a time) plus the samples it had to leave out and why; [`Mixture`] reads an epoch
//! over them by the weights.

mod mixture;
mod read;
mod shards;
mod urls;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use mixture::{Mixture, MixtureReader, SourceItems};
pub use read::{open_source, read_source, SourceRead};
pub use shards::{ShardPass, ShardSet};
pub use urls::expand_urls;

/// What a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// webdataset / img2dataset tar shards (`urls`): `key.jpg` + `key.json` (`caption`) or
    /// `key.txt`.
    Webdataset,
    /// A Karpathy-split train JSON (`annotations`) with its image root (`images`).
    Karpathy,
    /// Users' own pairs (`path`): JSONL of `{"image_path", "caption"}`, or a CSV / TSV / parquet
    /// with `image` (or `image_path`) and `caption` columns; images relative to `images`.
    Pairs,
    /// A BLIP CapFilt JSON array of `{image|url, caption}` (`path`), images relative to `images`.
    Capfilt,
    /// An img2dataset parquet / CSV / TSV table (`path`) with `key`, `caption`, `status`; its images
    /// are `{images}/{key}.jpg` (default: the folder named as the table without its extension,
    /// as img2dataset's `files` output lays them out). Rows whose status is not `success` are left
    /// out and counted.
    Table,
}

/// One `[[data.sources]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub kind: SourceKind,
    /// webdataset: the shard pattern (`/data/cc3m/{00000..00331}.tar`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<String>,
    /// karpathy: the annotation JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<PathBuf>,
    /// pairs, capfilt, table: the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The folder image paths are relative to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<PathBuf>,
    /// Relative share of the samples drawn from this source.
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

impl SourceSpec {
    /// A short name for logs and the data report: the kind and what it reads.
    pub fn name(&self) -> String {
        let shown = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let (kind, what) = match self.kind {
            SourceKind::Webdataset => ("webdataset", self.urls.clone()),
            SourceKind::Karpathy => ("karpathy", shown(&self.annotations)),
            SourceKind::Pairs => ("pairs", shown(&self.path)),
            SourceKind::Capfilt => ("capfilt", shown(&self.path)),
            SourceKind::Table => ("table", shown(&self.path)),
        };
        format!("{kind} {}", what.unwrap_or_default())
    }
}
