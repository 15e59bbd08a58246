//! Reading one source into loader items, with what it left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::shards::shard_items;
use super::{expand_urls, ShardSet, SourceItems, SourceKind, SourceSpec};
use crate::error::{DataError, Result};
use crate::formats::{read_capfilt, read_karpathy_train, read_pairs_jsonl};
use crate::item::{ImageSource, ImageTextItem};
use crate::loader::SkippedSample;

/// Samples left out of a source that are listed by key; the rest are only counted.
pub const LISTED_SKIPS: usize = 1000;

/// A source's items and the samples it left out.
#[derive(Debug, Clone, Default)]
pub struct SourceRead {
    pub items: Vec<ImageTextItem>,
    /// How many were left out, by reason.
    pub skipped: BTreeMap<String, usize>,
    /// The first [`LISTED_SKIPS`] of them, by key.
    pub skipped_keys: Vec<SkippedSample>,
}

impl SourceRead {
    pub(crate) fn skip(&mut self, key: String, reason: &str) {
        *self.skipped.entry(reason.to_string()).or_insert(0) += 1;
        if self.skipped_keys.len() < LISTED_SKIPS {
            self.skipped_keys.push(SkippedSample { key, reason: reason.to_string() });
        }
    }

    /// Adds what `other` left out (its items are not taken).
    pub(crate) fn absorb(&mut self, other: SourceRead) {
        for (reason, n) in other.skipped {
            *self.skipped.entry(reason).or_insert(0) += n;
        }
        let room = LISTED_SKIPS.saturating_sub(self.skipped_keys.len());
        self.skipped_keys.extend(other.skipped_keys.into_iter().take(room));
    }

    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }
}

fn required<'a, T>(value: &'a Option<T>, spec: &SourceSpec, key: &str) -> Result<&'a T> {
    value.as_ref().ok_or_else(|| {
        DataError::Invalid(format!("data.sources ({}): `{key}` is required", spec.name()))
    })
}

/// The folder `images` names, else the folder of `file`.
fn image_root(spec: &SourceSpec, file: &Path) -> PathBuf {
    spec.images.clone().unwrap_or_else(|| file.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// `spec` for training: a webdataset source streamed (its shards counted, `shuffle_buffer`
/// samples or more shuffled together), the others read into memory.
pub fn open_source(spec: &SourceSpec, shuffle_buffer: usize) -> Result<(SourceItems, SourceRead)> {
    if spec.kind == SourceKind::Webdataset {
        let (set, read) = ShardSet::open(spec, shuffle_buffer)?;
        return Ok((SourceItems::Streamed(set), read));
    }
    let mut read = read_source(spec)?;
    let items = std::mem::take(&mut read.items);
    Ok((SourceItems::Listed(items), read))
}

/// Reads `spec` whole. A file that cannot be read is an error; a sample that cannot be trained on is
/// left out and counted.
pub fn read_source(spec: &SourceSpec) -> Result<SourceRead> {
    let mut out = SourceRead::default();
    match spec.kind {
        SourceKind::Webdataset => {
            let shards = expand_urls(required(&spec.urls, spec, "urls")?)?;
            for shard in shards {
                let path = Arc::new(PathBuf::from(&shard));
                let first_id = out.items.len() as u64;
                let items = shard_items(&path, first_id, &mut out);
                out.items.extend(items);
            }
        }
        SourceKind::Karpathy => {
            let ann = required(&spec.annotations, spec, "annotations")?;
            out.items = read_karpathy_train(ann, &image_root(spec, ann))?;
        }
        SourceKind::Pairs => {
            let path = required(&spec.path, spec, "path")?;
            let root = image_root(spec, path);
            let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
            out.items = match ext.as_deref() {
                Some("jsonl") | Some("json") => read_pairs_jsonl(path, &root)?,
                _ => read_pairs_csv(spec, path, &root)?,
            };
        }
        SourceKind::Capfilt => {
            let path = required(&spec.path, spec, "path")?;
            for item in read_capfilt(path, &image_root(spec, path))? {
                match item.image {
                    ImageSource::Url(_) => {
                        out.skip(item.key, "a URL: download it first (img2dataset)")
                    }
                    _ => out.items.push(item),
                }
            }
        }
        SourceKind::Table => read_table_source(spec, &mut out)?,
    }
    Ok(out)
}

#[cfg(feature = "tables")]
fn read_pairs_csv(_: &SourceSpec, path: &Path, root: &Path) -> Result<Vec<ImageTextItem>> {
    crate::formats::read_pairs_table(path, root)
}

#[cfg(not(feature = "tables"))]
fn read_pairs_csv(spec: &SourceSpec, _: &Path, _: &Path) -> Result<Vec<ImageTextItem>> {
    Err(DataError::Invalid(format!(
        "data.sources ({}): CSV/TSV pairs need the `tables` feature of the datasets crate (or use JSONL)",
        spec.name()
    )))
}

#[cfg(feature = "tables")]
fn read_table_source(spec: &SourceSpec, out: &mut SourceRead) -> Result<()> {
    let path = required(&spec.path, spec, "path")?;
    let images = match &spec.images {
        Some(dir) => dir.clone(),
        None => path.with_extension(""),
    };
    let table = crate::formats::read_table(path, "caption")?;
    for (reason, n) in &table.skipped {
        let reason =
            if reason == "null caption" { reason.clone() } else { format!("status {reason}") };
        *out.skipped.entry(reason).or_insert(0) += n;
    }
    for row in table.rows {
        let Some(key) = row.key else {
            let what = row.url.unwrap_or_else(|| row.caption.clone());
            out.skip(what, "no key column value (its image file is named by the key)");
            continue;
        };
        let image_id = out.items.len() as u64;
        let image = ImageSource::Path(images.join(format!("{key}.jpg")));
        out.items.push(ImageTextItem { key, image, caption: row.caption, image_id });
    }
    Ok(())
}

#[cfg(not(feature = "tables"))]
fn read_table_source(spec: &SourceSpec, _: &mut SourceRead) -> Result<()> {
    Err(DataError::Invalid(format!(
        "data.sources ({}): tables need the `tables` feature of the datasets crate",
        spec.name()
    )))
}
